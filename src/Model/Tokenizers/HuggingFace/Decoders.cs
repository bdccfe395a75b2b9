using System.Text;
using System.Text.RegularExpressions;

namespace UioLlm.Model.Tokenizers.HuggingFace;

/// <summary>
/// One decoder of tokenizer.json, as a factory of streaming stages. Hugging Face decoders map a list of token
/// strings to a list of strings that is finally concatenated; some (ByteLevel, Fuse) join everything into one
/// string, after which the later decoders see the whole text. Stages are built knowing which side of such a join
/// they are on ("fused"), so that feeding tokens one at a time and flushing at the end gives exactly the text
/// the list form gives: whole-sequence decoding runs the same stages.
/// </summary>
internal abstract class DecoderSpec
{
    /// <summary>Appends this decoder's stages; returns whether the text is fused after them.</summary>
    public abstract bool Build(List<DecodeStage> stages, bool fused);
}

/// <summary>A streaming stage: receives tokens (or, once fused, chunks of the one text) and emits to the next.</summary>
internal abstract class DecodeStage
{
    public DecodeStage? Next;
    public StringBuilder Output = null!;

    public abstract void Push(string token);

    public virtual void Flush() => Next?.Flush();

    protected void Emit(string text)
    {
        if (Next is not null) Next.Push(text);
        else Output.Append(text);
    }
}

internal sealed class ByteLevelDecoderSpec : DecoderSpec
{
    private static readonly UTF8Encoding Utf8Bytes = new(false, false);

    /// <summary>A token's bytes: its characters mapped back through the alphabet, or its UTF-8 if one is outside it.</summary>
    public static byte[] TokenBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
            if (!ByteLevelAlphabet.TryToByte(token[i], out bytes[i])) return Utf8Bytes.GetBytes(token);
        return bytes;
    }

    public override bool Build(List<DecodeStage> stages, bool fused) { stages.Add(new ByteLevelStage()); return true; }

    /// <summary>
    /// Each token's characters back to bytes (a token with a character outside the alphabet, such as an added
    /// token's text, is taken as its own UTF-8); all bytes are one text, decoded as UTF-8 with U+FFFD for each
    /// maximal invalid sequence, as Rust's from_utf8_lossy does.
    /// </summary>
    private sealed class ByteLevelStage : DecodeStage
    {
        private static readonly UTF8Encoding Utf8 = new(false, false);
        private readonly Decoder decoder = new UTF8Encoding(false, false).GetDecoder();
        private byte[] bytes = new byte[64];
        private char[] chars = new char[64];

        public override void Push(string token)
        {
            int n = 0;
            bool all = true;
            if (bytes.Length < token.Length) bytes = new byte[Math.Max(token.Length, bytes.Length * 2)];
            foreach (char c in token)
            {
                if (!ByteLevelAlphabet.TryToByte(c, out byte b)) { all = false; break; }
                bytes[n++] = b;
            }
            if (!all)
            {
                n = Utf8.GetByteCount(token);
                if (bytes.Length < n) bytes = new byte[n];
                Utf8.GetBytes(token, bytes);
            }
            Decode(n, flush: false);
        }

        public override void Flush()
        {
            Decode(0, flush: true);
            base.Flush();
        }

        private void Decode(int n, bool flush)
        {
            int needed = n + 4;
            if (chars.Length < needed) chars = new char[Math.Max(needed, chars.Length * 2)];
            int count = decoder.GetChars(bytes, 0, n, chars, 0, flush);
            if (count > 0) Emit(new string(chars, 0, count));
        }
    }
}

internal sealed class ReplaceDecoderSpec(string? literal, Regex? regex, string content, string source) : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused)
    {
        if (fused && regex is not null)
            throw new ModelFormatException(source, "decoder Replace with a regex after ByteLevel or Fuse is not supported (only per-token regex replacement)");
        stages.Add(new ReplaceStage(literal, regex, content, fused));
        return fused;
    }

    private sealed class ReplaceStage(string? literal, Regex? regex, string content, bool fused) : DecodeStage
    {
        private string held = "";

        public override void Push(string token)
        {
            if (regex is not null) { Emit(regex.Replace(token, content.Replace("$", "$$", StringComparison.Ordinal))); return; }
            if (string.IsNullOrEmpty(literal)) { Emit(token); return; }
            if (!fused || literal.Length == 1) { Emit(token.Replace(literal, content, StringComparison.Ordinal)); return; }
            // One text arriving in chunks: hold back a tail that could be the start of a match.
            string text = held + token;
            int keep = 0;
            for (int k = Math.Min(literal.Length - 1, text.Length); k > 0; k--)
                if (literal.AsSpan().StartsWith(text.AsSpan(text.Length - k))) { keep = k; break; }
            string ready = text[..^keep];
            held = text[^keep..];
            // The held tail is a proper prefix of the pattern, so no match in the ready part can reach into it.
            if (ready.Length > 0) Emit(ready.Replace(literal, content, StringComparison.Ordinal));
        }

        public override void Flush()
        {
            if (held.Length > 0) Emit(held);
            held = "";
            base.Flush();
        }
    }
}

internal sealed class ByteFallbackDecoderSpec : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused)
    {
        if (!fused) stages.Add(new ByteFallbackStage());
        return fused;
    }

    /// <summary>
    /// A run of &lt;0xNN&gt; tokens becomes one token: its bytes as UTF-8 when they are valid, otherwise one U+FFFD
    /// per byte token (Hugging Face's rule). The run is held until a non-byte token or the end shows it is complete.
    /// </summary>
    private sealed class ByteFallbackStage : DecodeStage
    {
        private static readonly UTF8Encoding Strict = new(false, true);
        private readonly List<byte> run = [];

        public override void Push(string token)
        {
            if (SentencePieceVocab.TryParseBytePiece(token, out byte b)) { run.Add(b); return; }
            EmitRun();
            Emit(token);
        }

        public override void Flush()
        {
            EmitRun();
            base.Flush();
        }

        private void EmitRun()
        {
            if (run.Count == 0) return;
            string text;
            try { text = Strict.GetString(run.ToArray()); }
            catch (DecoderFallbackException) { text = new string('\uFFFD', run.Count); }
            run.Clear();
            Emit(text);
        }
    }
}

internal sealed class FuseDecoderSpec : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused) => true; // chunks pass on unchanged; later stages see one text
}

internal sealed class StripDecoderSpec(char content, int start, int stop) : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused)
    {
        stages.Add(fused ? new FusedStripStage(content, start, stop) : new TokenStripStage(content, start, stop));
        return fused;
    }

    private sealed class TokenStripStage(char content, int start, int stop) : DecodeStage
    {
        public override void Push(string token)
        {
            int s = 0, e = token.Length;
            while (s < Math.Min(start, token.Length) && token[s] == content) s++;
            for (int k = 0; k < stop; k++)
            {
                int index = token.Length - k - 1;
                if (index < 0 || token[index] != content) break;
                e = index;
            }
            Emit(s < e ? token[s..e] : "");
        }
    }

    /// <summary>The whole text's first up-to-start and last up-to-stop content characters are dropped.</summary>
    private sealed class FusedStripStage(char content, int start, int stop) : DecodeStage
    {
        private int seen; // characters of the text seen so far, while still inside the first `start`
        private bool startDone;
        private int heldRun; // trailing content characters held back (at most `stop`)

        public override void Push(string token)
        {
            int s = 0;
            while (!startDone && s < token.Length)
            {
                if (seen < start && token[s] == content) { seen++; s++; }
                else startDone = true;
            }
            if (s == token.Length) return;
            var body = token.AsSpan(s);
            if (stop == 0) { Emit(body.ToString()); return; }
            // Count the trailing run of content characters; everything before it (and the held run) is safe.
            int trailing = 0;
            while (trailing < body.Length && body[body.Length - 1 - trailing] == content) trailing++;
            if (trailing == body.Length) { heldRun += trailing; return; }
            var sb = new StringBuilder();
            sb.Append(content, heldRun).Append(body[..^trailing]);
            heldRun = trailing;
            Emit(sb.ToString());
        }

        public override void Flush()
        {
            if (heldRun > stop) Emit(new string(content, heldRun - stop));
            heldRun = 0;
            base.Flush();
        }
    }
}

internal sealed class MetaspaceDecoderSpec(char replacement, bool prepend) : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused)
    {
        stages.Add(new MetaspaceStage(replacement, prepend, fused));
        return fused;
    }

    /// <summary>The replacement becomes a space, except in the first token, where it is dropped when a prefix was prepended.</summary>
    private sealed class MetaspaceStage(char replacement, bool prepend, bool fused) : DecodeStage
    {
        private bool first = true;

        public override void Push(string token)
        {
            bool drop = prepend && (first || fused);
            first = false;
            Emit(drop ? token.Replace(replacement.ToString(), "", StringComparison.Ordinal) : token.Replace(replacement, ' '));
        }
    }
}

/// <summary>No decoder: Hugging Face joins the tokens with spaces.</summary>
internal sealed class JoinWithSpacesSpec : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused) { stages.Add(new JoinStage()); return true; }

    private sealed class JoinStage : DecodeStage
    {
        private bool first = true;

        public override void Push(string token)
        {
            Emit(first ? token : " " + token);
            first = false;
        }
    }
}

internal sealed class SequenceDecoderSpec(DecoderSpec[] decoders) : DecoderSpec
{
    public override bool Build(List<DecodeStage> stages, bool fused)
    {
        foreach (var d in decoders) fused = d.Build(stages, fused);
        return fused;
    }
}

/// <summary>A chain of stages for one decoding (a stream or one whole sequence).</summary>
internal sealed class DecodeChain
{
    private readonly DecodeStage? head;
    private readonly StringBuilder output = new();

    public DecodeChain(DecoderSpec spec)
    {
        var stages = new List<DecodeStage>();
        spec.Build(stages, fused: false);
        for (int k = 0; k < stages.Count; k++)
        {
            stages[k].Output = output;
            stages[k].Next = k + 1 < stages.Count ? stages[k + 1] : null;
        }
        head = stages.Count > 0 ? stages[0] : null;
    }

    public void Push(string token)
    {
        if (head is null) output.Append(token);
        else head.Push(token);
    }

    public void Flush() => head?.Flush();

    /// <summary>The text emitted since the last call.</summary>
    public string Take()
    {
        string text = output.ToString();
        output.Clear();
        return text;
    }
}
