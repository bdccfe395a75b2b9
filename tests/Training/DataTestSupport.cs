using System.Buffers;
using System.Text;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Tests.Training;

/// <summary>
/// A tiny tokenizer for data tests: one id per UTF-16 code unit below 256 (others become '?'), BOS 256,
/// EOS 257, no dummy prefix. Easy to predict: a text of n characters is n ids (n + 1 with BOS).
/// </summary>
internal sealed class CharTokenizer : ITokenizer, ITokenBytes
{
    public int VocabSize => 258;
    public int BosId => 256;
    public int EosId => 257;

    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        var ids = new List<int>(text.Length + 2);
        if (addBos) ids.Add(BosId);
        foreach (char c in text) ids.Add(c < 256 ? c : '?');
        if (addEos) ids.Add(EosId);
        return [.. ids];
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var text = new StringBuilder();
        foreach (int id in ids)
            if (id < 256) text.Append((char)id);
        return text.ToString();
    }

    public string TokenText(int id) => id switch { 256 => "<s>", 257 => "</s>", _ => ((char)id).ToString() };

    public TokenStream NewStream() => new(this);

    public void AppendBytes(int id, ref bool atStart, ArrayBufferWriter<byte> output)
    {
        if (id >= 256) return;
        output.Write(Encoding.UTF8.GetBytes(((char)id).ToString()));
        atStart = false;
    }
}

/// <summary>Wraps a tokenizer and counts its Encode calls (to see whether the cache was used).</summary>
internal sealed class CountingTokenizer(ITokenizer inner) : ITokenizer
{
    public int EncodeCalls { get; private set; }
    public int VocabSize => inner.VocabSize;
    public int BosId => inner.BosId;
    public int EosId => inner.EosId;

    public int[] Encode(string text, bool addBos = false, bool addEos = false)
    {
        EncodeCalls++;
        return inner.Encode(text, addBos, addEos);
    }

    public string Decode(ReadOnlySpan<int> ids) => inner.Decode(ids);
    public string TokenText(int id) => inner.TokenText(id);
    public TokenStream NewStream() => inner.NewStream();
}

/// <summary>A temporary folder removed when the test ends.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "uiollm-data-" + Guid.NewGuid().ToString("N"));

    /// <summary>Writes <paramref name="text"/> to a file under the folder (creating subfolders) and returns its full path.</summary>
    public string Write(string relative, string text)
    {
        string path = System.IO.Path.Combine(Path, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}
