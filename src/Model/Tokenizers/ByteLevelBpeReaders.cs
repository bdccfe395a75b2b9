using System.Text.Json;

namespace UioLlm.Model.Tokenizers;

/// <summary>Readers of the byte-level BPE file layouts: encoder.json + vocab.bpe, and Hugging Face tokenizer.json.</summary>
internal static class ByteLevelBpeReaders
{
    private const string EndOfText = "<|endoftext|>";

    public static ByteLevelBpeVocab ReadEncoderJson(string encoderJsonPath, string vocabBpePath)
    {
        using var doc = ParseJson(encoderJsonPath);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(encoderJsonPath, $"expected a JSON object of token -> id, found {doc.RootElement.ValueKind}");
        string[] tokens = ReadVocabObject(doc.RootElement, encoderJsonPath, "the root object", []);
        var merges = ReadMergesText(vocabBpePath);
        int endOfText = Array.IndexOf(tokens, EndOfText);
        return new ByteLevelBpeVocab
        {
            Source = encoderJsonPath,
            Tokens = tokens,
            Merges = merges,
            BosId = endOfText,
            EosId = endOfText,
        };
    }

    /// <summary>vocab.bpe: an optional "#version" line, then one merge per line: two tokens separated by a space.</summary>
    public static List<(string, string)> ReadMergesText(string path)
    {
        var merges = new List<(string, string)>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            merges.Add(ParseMerge(line, path, $"line {lineNumber}"));
        }
        return merges;
    }

    private static (string, string) ParseMerge(string line, string path, string where)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
            throw new ModelFormatException(path, $"merge at {where} is '{line}', expected two tokens separated by one space");
        return (line[..space], line[(space + 1)..]);
    }

    public static ByteLevelBpeVocab ReadTokenizerJson(string path)
    {
        using var doc = ParseJson(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "expected a JSON object at the root");
        var model = Property(root, "model", path, JsonValueKind.Object);
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "(none)";
        if (type != "BPE") throw new ModelFormatException(path, $"model.type is '{type}', expected 'BPE'");
        foreach (string option in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(option, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
                throw new ModelFormatException(path, $"model.{option} is '{v.GetString()}'; byte-level BPE with affixes is not supported");
        if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind != JsonValueKind.Null)
            throw new ModelFormatException(path, $"normalizer is {Describe(normalizer)}; only byte-level BPE without a normalizer is supported");
        bool addPrefixSpace = ReadByteLevelPreTokenizer(root, path);

        var added = ReadAddedTokens(root, path);
        string[] tokens = ReadVocabObject(Property(model, "vocab", path, JsonValueKind.Object), path, "model.vocab", added);
        var merges = ReadMergesJson(Property(model, "merges", path, JsonValueKind.Array), path);
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        var (bos, eos) = ReadBosEos(path, tokens);
        return new ByteLevelBpeVocab
        {
            Source = path,
            Tokens = tokens,
            Merges = merges,
            AddedTokens = added.Select(a => a.Id).ToArray(),
            BosId = bos,
            EosId = eos,
            AddPrefixSpace = addPrefixSpace,
            IgnoreMerges = ignoreMerges,
        };
    }

    /// <summary>The pre-tokenizer must be ByteLevel with the GPT-2 regex; returns its add_prefix_space.</summary>
    private static bool ReadByteLevelPreTokenizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object
            || !pre.TryGetProperty("type", out var type) || type.GetString() != "ByteLevel")
            throw new ModelFormatException(path, $"pre_tokenizer is {(root.TryGetProperty("pre_tokenizer", out var p) ? Describe(p) : "missing")}, expected ByteLevel (GPT-2 style)");
        if (pre.TryGetProperty("use_regex", out var useRegex) && useRegex.ValueKind == JsonValueKind.False)
            throw new ModelFormatException(path, "pre_tokenizer ByteLevel has use_regex false; only the GPT-2 split pattern is supported");
        return pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True;
    }

    private static List<(string Content, int Id)> ReadAddedTokens(JsonElement root, string path)
    {
        var added = new List<(string, int)>();
        if (!root.TryGetProperty("added_tokens", out var list) || list.ValueKind == JsonValueKind.Null) return added;
        if (list.ValueKind != JsonValueKind.Array) throw new ModelFormatException(path, $"added_tokens is {list.ValueKind}, expected an array");
        int index = 0;
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object
                || !item.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number || !id.TryGetInt32(out int idValue)
                || !item.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(path, $"added_tokens[{index}] must be an object with an integer 'id' and a string 'content'");
            if (idValue < 0)
                throw new ModelFormatException(path, $"added_tokens[{index}]: id is {idValue}, expected a non-negative integer");
            added.Add((content.GetString()!, idValue));
            index++;
        }
        return added;
    }

    /// <summary>A token -> id object plus extra (token, id) entries, turned into a dense id-indexed array.</summary>
    private static string[] ReadVocabObject(JsonElement vocab, string path, string what, List<(string Content, int Id)> extra)
    {
        var entries = new List<(string Token, int Id)>();
        foreach (var property in vocab.EnumerateObject())
        {
            if (property.Value.ValueKind != JsonValueKind.Number || !property.Value.TryGetInt32(out int id) || id < 0)
                throw new ModelFormatException(path, $"{what}: token '{property.Name}' has id {property.Value}, expected a non-negative integer");
            entries.Add((property.Name, id));
        }
        entries.AddRange(extra);
        if (entries.Count == 0) throw new ModelFormatException(path, $"{what} is empty");
        // Ids must be dense (0..n-1), so the largest id is below the number of entries; checking that before
        // allocating keeps a small file with a huge id from allocating an array of that size.
        int maxId = entries.Max(e => e.Id);
        if (maxId >= entries.Count)
        {
            var used = entries.Select(e => e.Id).ToHashSet();
            int missing = Enumerable.Range(0, entries.Count + 1).First(i => !used.Contains(i));
            throw new ModelFormatException(path, $"{what}: no token has id {missing}, but the largest id is {maxId}; ids must be 0..n-1 without gaps ({entries.Count} tokens)");
        }
        int size = maxId + 1;
        var tokens = new string?[size];
        foreach (var (token, id) in entries)
        {
            if (tokens[id] is { } existing && existing != token)
                throw new ModelFormatException(path, $"{what}: id {id} is given to both '{existing}' and '{token}'");
            tokens[id] = token;
        }
        int hole = Array.IndexOf(tokens, null);
        if (hole >= 0) throw new ModelFormatException(path, $"{what}: no token has id {hole}; ids must be 0..{size - 1} without gaps");
        return tokens!;
    }

    /// <summary>model.merges: strings "a b" (older files) or two-element arrays ["a", "b"] (newer files).</summary>
    private static List<(string, string)> ReadMergesJson(JsonElement merges, string path)
    {
        var result = new List<(string, string)>();
        int index = 0;
        foreach (var merge in merges.EnumerateArray())
        {
            if (merge.ValueKind == JsonValueKind.String) result.Add(ParseMerge(merge.GetString()!, path, $"model.merges[{index}]"));
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                     && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
                result.Add((merge[0].GetString()!, merge[1].GetString()!));
            else throw new ModelFormatException(path, $"model.merges[{index}] is {Describe(merge)}, expected \"a b\" or [\"a\", \"b\"]");
            index++;
        }
        return result;
    }

    /// <summary>BOS/EOS from a tokenizer_config.json beside the file, else &lt;|endoftext|&gt; when present, else none.</summary>
    private static (int Bos, int Eos) ReadBosEos(string path, string[] tokens)
    {
        int fallback = Array.IndexOf(tokens, EndOfText);
        string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "tokenizer_config.json");
        if (!File.Exists(config)) return (fallback, fallback);
        using var doc = ParseJson(config);
        int Find(string name)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty(name, out var value)) return fallback;
            string? text = value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                _ => null,
            };
            if (text is null) return -1;
            int id = Array.IndexOf(tokens, text);
            if (id < 0) throw new ModelFormatException(config, $"{name} '{text}' is not in the vocabulary of {path}");
            return id;
        }
        return (Find("bos_token"), Find("eos_token"));
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            Formats.Utf8Text.Require(bytes, path, "the JSON text");
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON: {e.Message}", e);
        }
    }

    private static JsonElement Property(JsonElement obj, string name, string path, JsonValueKind kind)
    {
        if (!obj.TryGetProperty(name, out var value))
            throw new ModelFormatException(path, $"missing '{name}'");
        if (value.ValueKind != kind)
            throw new ModelFormatException(path, $"'{name}' is {value.ValueKind}, expected {kind}");
        return value;
    }

    private static string Describe(JsonElement e) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) ? $"type '{t}'" : e.ValueKind.ToString();
}
