using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>Everything a <see cref="HuggingFaceTokenizer"/> runs, read from one tokenizer.json.</summary>
internal sealed class TokenizerJson
{
    public required string Source { get; init; }
    /// <summary>Token text by id (model vocabulary, then added tokens); null for an id nothing uses.</summary>
    public required string?[] Tokens { get; init; }
    public required bool[] Special { get; init; }
    public required Dictionary<string, int> Ids { get; init; }
    public required AddedTokenMatcher RawAdded { get; init; }
    public required AddedTokenMatcher NormalizedAdded { get; init; }
    public TextNormalizer? Normalizer { get; init; }
    public PreTokenizerStep? PreTokenizer { get; init; }
    public required BpeModel Model { get; init; }
    public required PostProcessor PostProcessor { get; init; }
    public required DecoderSpec Decoder { get; init; }
    public int BosId { get; init; } = -1;
    public int EosId { get; init; } = -1;
    /// <summary>
    /// No pre-tokenizer and no merge result holds a character other than U+2581 followed by U+2581: merges cannot
    /// cross the point before such a U+2581, so the text may be cut there (word by word, cached) with the same ids.
    /// </summary>
    public bool SplitAtWordStarts { get; init; }
}

/// <summary>
/// Reads tokenizer.json. Every unsupported or malformed part is a <see cref="ModelFormatException"/> naming the
/// file, the field, what was expected and what was found.
/// </summary>
internal static class TokenizerJsonReader
{
    /// <summary>Largest id accepted, so that a corrupt id cannot make the reader allocate gigabytes.</summary>
    private const int MaxId = 16_777_215;

    /// <summary>model.type of a tokenizer.json, or "(none)".</summary>
    public static string ModelType(JsonElement root) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.Object
        && m.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "(none)";

    public static JsonDocument Parse(string path)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            // Strings are transcoded lazily: invalid UTF-8 would surface later as an untyped exception.
            Formats.Utf8Text.Require(bytes, path, "the JSON text");
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Opens a tokenizer.json of any supported model type: BPE here, Unigram through <see cref="UnigramTokenizer"/>.</summary>
    public static ITokenizer Load(string path)
    {
        using (var doc = Parse(path))
        {
            if (ModelType(doc.RootElement) != "Unigram") return new HuggingFaceTokenizer(ReadBpe(doc.RootElement, path));
        }
        return UnigramTokenizer.FromTokenizerJson(path);
    }

    public static TokenizerJson ReadBpe(string path)
    {
        using var doc = Parse(path);
        return ReadBpe(doc.RootElement, path);
    }

    public static TokenizerJson ReadBpe(JsonElement root, string path)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"expected a JSON object at the root, found {root.ValueKind}");
        var model = Required(root, "model", path, JsonValueKind.Object, "model");
        string type = ModelType(root);
        // Files written before model.type existed carry a BPE model with vocab and merges and no type.
        if (type == "(none)" && model.TryGetProperty("merges", out _)) type = "BPE";
        if (type != "BPE") throw new ModelFormatException(path, $"model.type is '{type}', expected 'BPE' (Unigram goes through UnigramTokenizer)");

        var normalizer = ReadNormalizer(root, path);
        var (preTokenizer, byteLevel) = ReadPreTokenizer(root, path);

        // Model vocabulary.
        var vocabElement = Required(model, "vocab", path, JsonValueKind.Object, "model.vocab");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = -1;
        foreach (var property in vocabElement.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id) || id < 0 || id > MaxId)
                throw new ModelFormatException(path, $"model.vocab: token '{property.Name}' has id {property.Value.GetRawText()}, expected an integer in [0, {MaxId}]");
            if (!vocab.TryAdd(property.Name, id)) throw new ModelFormatException(path, $"model.vocab: token '{property.Name}' appears twice");
            maxId = Math.Max(maxId, id);
        }
        if (vocab.Count == 0) throw new ModelFormatException(path, "model.vocab is empty");

        var added = ReadAddedTokens(root, path);
        foreach (var a in added) maxId = Math.Max(maxId, a.Id);
        long entries = vocab.Count + added.Count;
        if (maxId >= 2 * entries + 1024)
            throw new ModelFormatException(path, $"ids are sparse: the largest id is {maxId} for {entries} tokens (model.vocab and added_tokens)");
        var tokens = new string?[maxId + 1];
        foreach (var (token, id) in vocab)
        {
            if (tokens[id] is { } other) throw new ModelFormatException(path, $"model.vocab: id {id} is given to both '{other}' and '{token}'");
            tokens[id] = token;
        }
        var special = new bool[maxId + 1];
        var ids = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        foreach (var a in added)
        {
            // An added token may share an id with the model vocabulary; Hugging Face then decodes the added text.
            tokens[a.Id] = a.Content;
            special[a.Id] = a.Special;
            ids[a.Content] = a.Id;
        }

        // Merges and the rest of the model.
        var mergesElement = Required(model, "merges", path, JsonValueKind.Array, "model.merges");
        string prefix = OptionalString(model, "continuing_subword_prefix", path, "model") ?? "";
        string suffix = OptionalString(model, "end_of_word_suffix", path, "model") ?? "";
        var merges = ReadMerges(mergesElement, vocab, prefix, path);
        bool byteFallback = OptionalBool(model, "byte_fallback", path, "model");
        bool fuseUnk = OptionalBool(model, "fuse_unk", path, "model");
        bool ignoreMerges = OptionalBool(model, "ignore_merges", path, "model");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw new ModelFormatException(path, $"model.dropout is {dropout.GetDouble()}, expected null or 0 (BPE dropout is for training; encoding must be deterministic)");
        int unkId = -1;
        if (OptionalString(model, "unk_token", path, "model") is { } unk)
        {
            if (!vocab.TryGetValue(unk, out unkId))
                throw new ModelFormatException(path, $"model.unk_token '{unk}' is not in model.vocab");
        }
        var bpe = new BpeModel(vocab, merges, byteLevel, byteFallback, unkId, fuseUnk, ignoreMerges, prefix, suffix, path);

        // Added tokens: those marked normalized are looked for in normalized text, as their normalized form.
        var raw = new AddedTokenMatcher(added.Where(a => !a.Normalized).Select(a => (a.Content, a)));
        var normalizedAdded = new AddedTokenMatcher(added.Where(a => a.Normalized)
            .Select(a => (normalizer is null ? a.Content : normalizer.Normalize(a.Content), a)));

        // (With ignore_merges a whole stretch found in the vocabulary is one token, and without U+2581 in the
        // vocabulary unknown characters could fuse across the cut: neither may be cut.)
        bool splitAtWordStarts = preTokenizer is null && !byteLevel && merges.Count > 0 && !ignoreMerges && vocab.ContainsKey("\u2581");
        if (splitAtWordStarts)
            foreach (var (_, (_, mergedId)) in merges)
            {
                string t = tokens[mergedId]!;
                for (int k = 1; k < t.Length && splitAtWordStarts; k++)
                    if (t[k] == '\u2581' && t[k - 1] != '\u2581') splitAtWordStarts = false;
                if (!splitAtWordStarts) break;
            }
        var post = ReadPostProcessor(root, path, ids);
        var decoder = ReadDecoder(root, path);
        var (bos, eos) = ReadBosEos(path, ids, post);
        return new TokenizerJson
        {
            Source = path,
            Tokens = tokens,
            Special = special,
            Ids = ids,
            RawAdded = raw,
            NormalizedAdded = normalizedAdded,
            Normalizer = normalizer,
            PreTokenizer = preTokenizer,
            Model = bpe,
            PostProcessor = post,
            Decoder = decoder,
            BosId = bos,
            EosId = eos,
            SplitAtWordStarts = splitAtWordStarts,
        };
    }

    public static List<AddedToken> ReadAddedTokens(JsonElement root, string path)
    {
        var added = new List<AddedToken>();
        if (!root.TryGetProperty("added_tokens", out var list) || list.ValueKind == JsonValueKind.Null) return added;
        if (list.ValueKind != JsonValueKind.Array) throw new ModelFormatException(path, $"added_tokens is {list.ValueKind}, expected an array");
        int index = 0;
        foreach (var item in list.EnumerateArray())
        {
            string where = $"added_tokens[{index}]";
            if (item.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"{where} is {item.ValueKind}, expected an object");
            var idElement = Required(item, "id", path, JsonValueKind.Number, where + ".id");
            if (!idElement.TryGetInt32(out int id) || id < 0 || id > MaxId)
                throw new ModelFormatException(path, $"{where}.id is {idElement.GetRawText()}, expected an integer in [0, {MaxId}]");
            string content = Required(item, "content", path, JsonValueKind.String, where + ".content").GetString()!;
            if (content.Length == 0) throw new ModelFormatException(path, $"{where}.content is empty");
            bool specialToken = OptionalBool(item, "special", path, where);
            bool normalized = item.TryGetProperty("normalized", out var n) && n.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? n.GetBoolean() : !specialToken;
            added.Add(new AddedToken(id, content, specialToken, normalized, OptionalBool(item, "lstrip", path, where),
                OptionalBool(item, "rstrip", path, where), OptionalBool(item, "single_word", path, where)));
            index++;
        }
        return added;
    }

    private static Dictionary<long, (int, int)> ReadMerges(JsonElement merges, Dictionary<string, int> vocab, string prefix, string path)
    {
        var table = new Dictionary<long, (int, int)>(merges.GetArrayLength(), MixedLongComparer.Instance);
        int rank = 0;
        foreach (var merge in merges.EnumerateArray())
        {
            string where = $"model.merges[{rank}]";
            string left, right;
            if (merge.ValueKind == JsonValueKind.String)
            {
                string line = merge.GetString()!;
                int space = line.IndexOf(' ');
                if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
                    throw new ModelFormatException(path, $"{where} is \"{line}\", expected two tokens separated by one space");
                left = line[..space];
                right = line[(space + 1)..];
            }
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                     && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
            {
                left = merge[0].GetString()!;
                right = merge[1].GetString()!;
            }
            else throw new ModelFormatException(path, $"{where} is {merge.ValueKind}, expected \"a b\" or [\"a\", \"b\"]");
            if (!vocab.TryGetValue(left, out int l)) throw new ModelFormatException(path, $"{where}: '{left}' is not in model.vocab");
            if (!vocab.TryGetValue(right, out int r)) throw new ModelFormatException(path, $"{where}: '{right}' is not in model.vocab");
            string joined = left + (prefix.Length > 0 && right.StartsWith(prefix, StringComparison.Ordinal) ? right[prefix.Length..] : right);
            if (!vocab.TryGetValue(joined, out int merged))
                throw new ModelFormatException(path, $"{where} ('{left}' + '{right}') makes '{joined}', which is not in model.vocab");
            table.TryAdd(BpeModel.PairKey(l, r), (rank, merged)); // a repeated merge keeps its first rank
            rank++;
        }
        return table;
    }

    // ---- normalizers ----

    private static TextNormalizer? ReadNormalizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null) return null;
        return ReadNormalizer(n, path, "normalizer");
    }

    private static TextNormalizer ReadNormalizer(JsonElement n, string path, string where)
    {
        string type = TypeOf(n, path, where);
        if (type is "NFC" or "NFD" or "NFKC" or "NFKD" && UnicodeNormalization.Unavailable is { } why)
            throw new ModelFormatException(path, $"{where} is {type}, which cannot run here: {why}");
        switch (type)
        {
            case "NFC": return new UnicodeNormalizer(NormalizationForm.FormC);
            case "NFD": return new UnicodeNormalizer(NormalizationForm.FormD);
            case "NFKC": return new UnicodeNormalizer(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeNormalizer(NormalizationForm.FormKD);
            case "Lowercase": return new LowercaseNormalizer();
            case "Strip": return new StripNormalizer(OptionalBool(n, "strip_left", path, where), OptionalBool(n, "strip_right", path, where));
            case "Prepend": return new PrependNormalizer(Required(n, "prepend", path, JsonValueKind.String, where + ".prepend").GetString()!);
            case "Replace":
            {
                var (literal, regex) = ReadPattern(n, path, where);
                string content = Required(n, "content", path, JsonValueKind.String, where + ".content").GetString()!;
                return new ReplaceNormalizer(literal, regex, content);
            }
            case "Sequence":
            {
                var list = Required(n, "normalizers", path, JsonValueKind.Array, where + ".normalizers");
                return new SequenceNormalizer(list.EnumerateArray().Select((item, i) => ReadNormalizer(item, path, $"{where}.normalizers[{i}]")).ToArray());
            }
            default:
                throw new ModelFormatException(path, $"{where} is type '{type}', expected one of NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence");
        }
    }

    // ---- pre-tokenizers ----

    private static (PreTokenizerStep?, bool ByteLevel) ReadPreTokenizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var p) || p.ValueKind == JsonValueKind.Null) return (null, false);
        bool byteLevel = false;
        var step = ReadPreTokenizer(p, path, "pre_tokenizer", ref byteLevel);
        return (step, byteLevel);
    }

    private static PreTokenizerStep ReadPreTokenizer(JsonElement p, string path, string where, ref bool byteLevel)
    {
        string type = TypeOf(p, path, where);
        if (byteLevel && type != "Sequence")
            throw new ModelFormatException(path, $"{where} ({type}) comes after a ByteLevel pre-tokenizer; only ByteLevel as the last splitting step is supported");
        switch (type)
        {
            case "ByteLevel":
                byteLevel = true;
                return new ByteLevelPreTokenizer(OptionalBool(p, "add_prefix_space", path, where),
                    !p.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False);
            case "Split":
            {
                var (literal, regex) = ReadPattern(p, path, where, keepRegexText: true, out string? regexText);
                string behaviorName = Required(p, "behavior", path, JsonValueKind.String, where + ".behavior").GetString()!;
                if (!Enum.TryParse<SplitBehavior>(behaviorName, out var behavior) || !Enum.IsDefined(behavior))
                    throw new ModelFormatException(path, $"{where}.behavior is '{behaviorName}', expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
                var pattern = literal is not null ? new LiteralPattern(literal) : SplitPattern.ForRegex(regexText!, path);
                _ = regex;
                return new SplitPreTokenizer(pattern, behavior, OptionalBool(p, "invert", path, where));
            }
            case "Metaspace":
            {
                string replacement = OptionalString(p, "replacement", path, where) ?? "\u2581";
                if (replacement.Length != 1) throw new ModelFormatException(path, $"{where}.replacement is '{replacement}', expected one character");
                string scheme = OptionalString(p, "prepend_scheme", path, where)
                    ?? (p.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                if (scheme is not ("always" or "first" or "never"))
                    throw new ModelFormatException(path, $"{where}.prepend_scheme is '{scheme}', expected always, first or never");
                bool split = !p.TryGetProperty("split", out var sp) || sp.ValueKind != JsonValueKind.False;
                return new MetaspacePreTokenizer(replacement[0], scheme, split);
            }
            case "Digits": return new DigitsPreTokenizer(OptionalBool(p, "individual_digits", path, where));
            case "WhitespaceSplit": return new WhitespaceSplitPreTokenizer();
            case "Sequence":
            {
                var list = Required(p, "pretokenizers", path, JsonValueKind.Array, where + ".pretokenizers");
                var steps = new List<PreTokenizerStep>();
                int i = 0;
                foreach (var item in list.EnumerateArray()) steps.Add(ReadPreTokenizer(item, path, $"{where}.pretokenizers[{i++}]", ref byteLevel));
                return new SequencePreTokenizer(steps.ToArray());
            }
            default:
                throw new ModelFormatException(path, $"{where} is type '{type}', expected one of Split, ByteLevel, Metaspace, Digits, WhitespaceSplit, Sequence");
        }
    }

    private static (string? Literal, Regex? Regex) ReadPattern(JsonElement obj, string path, string where)
        => ReadPattern(obj, path, where, keepRegexText: false, out _);

    private static (string? Literal, Regex? Regex) ReadPattern(JsonElement obj, string path, string where, bool keepRegexText, out string? regexText)
    {
        regexText = null;
        var pattern = Required(obj, "pattern", path, JsonValueKind.Object, where + ".pattern");
        if (pattern.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) return (s.GetString()!, null);
        if (pattern.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String)
        {
            regexText = r.GetString()!;
            if (keepRegexText) return (null, null);
            try { return (null, new Regex(regexText, RegexOptions.CultureInvariant)); }
            catch (ArgumentException e) { throw new ModelFormatException(path, $"{where}.pattern.Regex '{regexText}' is not supported by the .NET regex engine: {e.Message}", e); }
        }
        throw new ModelFormatException(path, $"{where}.pattern is {pattern.GetRawText()}, expected {{\"String\": \"...\"}} or {{\"Regex\": \"...\"}}");
    }

    // ---- post-processors ----

    private static PostProcessor ReadPostProcessor(JsonElement root, string path, Dictionary<string, int> ids)
    {
        if (!root.TryGetProperty("post_processor", out var p) || p.ValueKind == JsonValueKind.Null) return PostProcessor.None;
        var before = new List<int>();
        var after = new List<int>();
        ReadPostProcessor(p, path, "post_processor", ids, before, after);
        return new PostProcessor(before.ToArray(), after.ToArray());
    }

    private static void ReadPostProcessor(JsonElement p, string path, string where, Dictionary<string, int> ids, List<int> before, List<int> after)
    {
        string type = TypeOf(p, path, where);
        switch (type)
        {
            case "ByteLevel": return; // offsets only
            case "TemplateProcessing":
            {
                var single = Required(p, "single", path, JsonValueKind.Array, where + ".single");
                var specials = p.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object ? st : default;
                bool seenA = false;
                int i = 0;
                foreach (var item in single.EnumerateArray())
                {
                    string itemWhere = $"{where}.single[{i++}]";
                    if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("Sequence", out _)) { seenA = true; continue; }
                    if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("SpecialToken", out var special) || special.ValueKind != JsonValueKind.Object)
                        throw new ModelFormatException(path, $"{itemWhere} is {item.GetRawText()}, expected {{\"SpecialToken\": ...}} or {{\"Sequence\": ...}}");
                    string name = Required(special, "id", path, JsonValueKind.String, itemWhere + ".SpecialToken.id").GetString()!;
                    if (specials.ValueKind != JsonValueKind.Object || !specials.TryGetProperty(name, out var entry) || entry.ValueKind != JsonValueKind.Object)
                        throw new ModelFormatException(path, $"{itemWhere} names special token '{name}', which {where}.special_tokens does not define");
                    var list = Required(entry, "ids", path, JsonValueKind.Array, $"{where}.special_tokens.{name}.ids");
                    foreach (var idElement in list.EnumerateArray())
                    {
                        if (idElement.ValueKind != JsonValueKind.Number || !idElement.TryGetInt32(out int id) || id < 0)
                            throw new ModelFormatException(path, $"{where}.special_tokens.{name}.ids holds {idElement.GetRawText()}, expected non-negative integers");
                        (seenA ? after : before).Add(id);
                    }
                }
                return;
            }
            case "BertProcessing":
            case "RobertaProcessing":
            {
                before.Add(ReadNamedId(p, "cls", path, where));
                after.Add(ReadNamedId(p, "sep", path, where));
                return;
            }
            case "Sequence":
            {
                var list = Required(p, "processors", path, JsonValueKind.Array, where + ".processors");
                int i = 0;
                foreach (var item in list.EnumerateArray()) ReadPostProcessor(item, path, $"{where}.processors[{i++}]", ids, before, after);
                return;
            }
            default:
                throw new ModelFormatException(path, $"{where} is type '{type}', expected one of TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence");
        }
    }

    /// <summary>Bert/Roberta's ["[CLS]", 101] pairs.</summary>
    private static int ReadNamedId(JsonElement p, string name, string path, string where)
    {
        var pair = Required(p, name, path, JsonValueKind.Array, $"{where}.{name}");
        if (pair.GetArrayLength() != 2 || pair[1].ValueKind != JsonValueKind.Number || !pair[1].TryGetInt32(out int id) || id < 0)
            throw new ModelFormatException(path, $"{where}.{name} is {pair.GetRawText()}, expected [\"token\", id]");
        return id;
    }

    // ---- decoders ----

    /// <summary>The decoder chain of a tokenizer.json (spaces between tokens when it has none).</summary>
    public static DecoderSpec ReadDecoderOf(JsonElement root, string path) => ReadDecoder(root, path);

    private static DecoderSpec ReadDecoder(JsonElement root, string path)
    {
        if (!root.TryGetProperty("decoder", out var d) || d.ValueKind == JsonValueKind.Null) return new JoinWithSpacesSpec();
        return ReadDecoder(d, path, "decoder");
    }

    private static DecoderSpec ReadDecoder(JsonElement d, string path, string where)
    {
        string type = TypeOf(d, path, where);
        switch (type)
        {
            case "ByteLevel": return new ByteLevelDecoderSpec();
            case "ByteFallback": return new ByteFallbackDecoderSpec();
            case "Fuse": return new FuseDecoderSpec();
            case "Replace":
            {
                var (literal, regex) = ReadPattern(d, path, where);
                return new ReplaceDecoderSpec(literal, regex, Required(d, "content", path, JsonValueKind.String, where + ".content").GetString()!, path);
            }
            case "Strip":
            {
                string content = Required(d, "content", path, JsonValueKind.String, where + ".content").GetString()!;
                if (content.Length != 1) throw new ModelFormatException(path, $"{where}.content is '{content}', expected one character");
                return new StripDecoderSpec(content[0], ReadCount(d, "start", path, where), ReadCount(d, "stop", path, where));
            }
            case "Metaspace":
            {
                string replacement = OptionalString(d, "replacement", path, where) ?? "\u2581";
                if (replacement.Length != 1) throw new ModelFormatException(path, $"{where}.replacement is '{replacement}', expected one character");
                string scheme = OptionalString(d, "prepend_scheme", path, where)
                    ?? (d.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                return new MetaspaceDecoderSpec(replacement[0], scheme != "never");
            }
            case "Sequence":
            {
                var list = Required(d, "decoders", path, JsonValueKind.Array, where + ".decoders");
                return new SequenceDecoderSpec(list.EnumerateArray().Select((item, i) => ReadDecoder(item, path, $"{where}.decoders[{i}]")).ToArray());
            }
            default:
                throw new ModelFormatException(path, $"{where} is type '{type}', expected one of ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence");
        }
    }

    private static int ReadCount(JsonElement d, string name, string path, string where)
    {
        if (!d.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return 0;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 0 || n > 1_000_000)
            throw new ModelFormatException(path, $"{where}.{name} is {v.GetRawText()}, expected a non-negative integer");
        return n;
    }

    // ---- BOS / EOS ----

    /// <summary>From tokenizer_config.json beside the file (bos_token / eos_token), else the post-processor's tokens around the text.</summary>
    private static (int Bos, int Eos) ReadBosEos(string path, Dictionary<string, int> ids, PostProcessor post)
    {
        int bos = post.Before.Length > 0 ? post.Before[^1] : -1;
        int eos = post.After.Length > 0 ? post.After[0] : -1;
        string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "tokenizer_config.json");
        if (!File.Exists(config)) return (bos, eos);
        using var doc = Parse(config);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) return (bos, eos);
        int Find(string name, int fallback)
        {
            if (!doc.RootElement.TryGetProperty(name, out var value)) return fallback;
            string? text = value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                JsonValueKind.Null => null,
                _ => throw new ModelFormatException(config, $"{name} is {value.ValueKind}, expected a string, an object with 'content', or null"),
            };
            if (text is null) return -1;
            if (!ids.TryGetValue(text, out int id)) throw new ModelFormatException(config, $"{name} '{text}' is not a token of {path}");
            return id;
        }
        return (Find("bos_token", bos), Find("eos_token", eos));
    }

    // ---- JSON helpers ----

    private static string TypeOf(JsonElement e, string path, string where)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"{where} is {e.ValueKind}, expected an object with a 'type'");
        if (!e.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
            throw new ModelFormatException(path, $"{where} has no string 'type'");
        return t.GetString()!;
    }

    private static JsonElement Required(JsonElement obj, string name, string path, JsonValueKind kind, string where)
    {
        if (!obj.TryGetProperty(name, out var value)) throw new ModelFormatException(path, $"{where} is missing");
        if (value.ValueKind != kind) throw new ModelFormatException(path, $"{where} is {value.ValueKind}, expected {kind}");
        return value;
    }

    private static string? OptionalString(JsonElement obj, string name, string path, string where)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.String) throw new ModelFormatException(path, $"{where}.{name} is {value.ValueKind}, expected a string or null");
        return value.GetString();
    }

    private static bool OptionalBool(JsonElement obj, string name, string path, string where)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return false;
        if (value.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            throw new ModelFormatException(path, $"{where}.{name} is {value.ValueKind}, expected true or false");
        return value.GetBoolean();
    }
}
