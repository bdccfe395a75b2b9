using System.Text;
using System.Text.Json;
using UioLlm.Model;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;
using static UioLlm.Tests.Tokenizers.TokenizerFixtures;

namespace UioLlm.Tests.Tokenizers;

/// <summary>
/// The three real tokenizer.json files in ../shared/data/tokenizers/hf-json (Llama 3, Qwen3, a Mistral-style
/// SentencePiece BPE) against ids from Hugging Face's Rust implementation.
/// </summary>
public class HuggingFaceTokenizerTests
{
    public static TheoryData<string> Folders => new() { "llama3", "qwen3", "spm-bpe-32k" };

    private sealed record Case(string Text, int[] Ids, int[] IdsWithSpecial, string Decoded);

    private static List<Case> Cases(string folder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.File("tokenizers", "hf-json", folder, "reference_cases.json")));
        var cases = new List<Case>();
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
            cases.Add(new Case(c.GetProperty("text").GetString()!,
                c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("ids_with_special").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("decoded").GetString()!));
        return cases;
    }

    [DataTheory]
    [MemberData(nameof(Folders))]
    public void EveryReferenceCaseMatches(string folder)
    {
        var t = HfJson(folder);
        var cases = Cases(folder);
        Assert.True(cases.Count >= 40, $"only {cases.Count} cases");
        var failures = new List<string>();
        foreach (var c in cases)
        {
            void Check(int[] expected, int[] actual, string what)
            {
                if (!expected.SequenceEqual(actual))
                    failures.Add($"{what} '{Escape(c.Text)}': expected [{string.Join(' ', expected)}], got [{string.Join(' ', actual)}]");
            }
            Check(c.Ids, t.Encode(c.Text), "ids");
            Check(c.IdsWithSpecial, t.EncodeWithSpecialTokens(c.Text), "ids_with_special");
            string decoded = t.Decode(c.Ids);
            if (decoded != c.Decoded) failures.Add($"decode '{Escape(c.Text)}': expected '{Escape(c.Decoded)}', got '{Escape(decoded)}'");
            string streamed = Stream(t, c.Ids);
            if (streamed != c.Decoded) failures.Add($"stream '{Escape(c.Text)}': expected '{Escape(c.Decoded)}', got '{Escape(streamed)}'");
        }
        Assert.True(failures.Count == 0, $"{folder}: {failures.Count} failures:\n" + string.Join('\n', failures));
    }

    [DataTheory]
    [MemberData(nameof(Folders))]
    public void MobyDickChapterOneMatches(string folder)
    {
        var t = HfJson(folder);
        int[] expected = File.ReadAllText(TestData.File("tokenizers", "hf-json", folder, "moby_dick_ch1.ids.txt"))
            .Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        string text = Text("moby_dick_ch1.txt");
        SameIds(expected, t.Encode(text), $"{folder}: moby_dick_ch1");
        Assert.Equal(text, t.Decode(expected));
        Assert.Equal(text, Stream(t, expected));
    }

    private static string Escape(string s) => s.Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t");
}
