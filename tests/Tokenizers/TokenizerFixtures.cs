using System.Text;
using System.Text.Json;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Tokenizers;

/// <summary>The real tokenizers and test vectors from the shared data, each loaded once per test run.</summary>
public static class TokenizerFixtures
{
    private static readonly Lazy<SentencePieceTokenizer> LlamaModelLazy = new(() =>
        SentencePieceTokenizer.FromModelFile(TestData.File("tokenizers", "llama2", "tokenizer.model")));
    private static readonly Lazy<SentencePieceTokenizer> LlamaBinLazy = new(() =>
        SentencePieceTokenizer.FromLlama2cFile(TestData.File("tokenizers", "llama2", "tokenizer.bin")));
    private static readonly Lazy<ITokenizer> LlamaGgufLazy = new(() =>
        GgufTokenizer.Load(TestData.File("tokenizers", "llama2", "ggml-vocab-llama-spm.gguf")));
    private static readonly Lazy<ByteLevelBpeTokenizer> Gpt2Lazy = new(() =>
        ByteLevelBpeTokenizer.FromEncoderJson(TestData.File("tokenizers", "gpt2", "encoder.json"), TestData.File("tokenizers", "gpt2", "vocab.bpe")));
    private static readonly Lazy<ITokenizer> Gpt2GgufLazy = new(() =>
        GgufTokenizer.Load(TestData.File("tokenizers", "gpt2", "ggml-vocab-gpt-2.gguf")));

    private static readonly Dictionary<string, Lazy<HuggingFaceTokenizer>> HfJsonLazy = new[] { "llama3", "qwen3", "spm-bpe-32k" }
        .ToDictionary(f => f, f => new Lazy<HuggingFaceTokenizer>(() =>
            HuggingFaceTokenizer.FromFile(TestData.File("tokenizers", "hf-json", f, "tokenizer.json"))));

    /// <summary>A real tokenizer.json from ../shared/data/tokenizers/hf-json (llama3, qwen3, spm-bpe-32k), loaded once.</summary>
    public static HuggingFaceTokenizer HfJson(string folder) => HfJsonLazy[folder].Value;

    public static SentencePieceTokenizer LlamaModel => LlamaModelLazy.Value;
    public static SentencePieceTokenizer LlamaBin => LlamaBinLazy.Value;
    public static ITokenizer LlamaGguf => LlamaGgufLazy.Value;
    public static ByteLevelBpeTokenizer Gpt2 => Gpt2Lazy.Value;
    public static ITokenizer Gpt2Gguf => Gpt2GgufLazy.Value;

    public static ITokenizer Llama(string source) => source switch
    {
        "model" => LlamaModel,
        "bin" => LlamaBin,
        "gguf" => LlamaGguf,
        _ => throw new ArgumentException(source),
    };

    public static ITokenizer Gpt2From(string source) => source switch
    {
        "encoder.json" => Gpt2,
        "gguf" => Gpt2Gguf,
        _ => throw new ArgumentException(source),
    };

    /// <summary>llama.cpp's vocab test files: strings separated by "\n__ggml_vocab_test__\n", ids one line each.</summary>
    public static List<(string Text, int[] Ids)> GgmlVectors(string folder, string gguf)
    {
        string inp = File.ReadAllText(TestData.File("tokenizers", folder, gguf + ".inp"), Encoding.UTF8);
        string[] texts = inp.Split("\n__ggml_vocab_test__\n");
        string[] lines = File.ReadAllText(TestData.File("tokenizers", folder, gguf + ".out")).Split('\n');
        // Every test string is followed by the separator, every id line by '\n': both leave one empty tail.
        Assert.Equal("", texts[^1]);
        Assert.Equal("", lines[^1]);
        Assert.Equal(texts.Length, lines.Length);
        var cases = new List<(string, int[])>();
        for (int i = 0; i < texts.Length - 1; i++)
            cases.Add((texts[i], lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray()));
        return cases;
    }

    /// <summary>{"ids": [...]} of a JSON file under the data root.</summary>
    public static int[] JsonIds(params string[] path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.File(path)));
        return doc.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
    }

    public static string Text(string name) => File.ReadAllText(TestData.File("text", name), Encoding.UTF8);

    /// <summary>Asserts equal id sequences, reporting the first difference with context.</summary>
    public static void SameIds(int[] expected, int[] actual, string what)
    {
        int n = Math.Min(expected.Length, actual.Length);
        for (int i = 0; i < n; i++)
            if (expected[i] != actual[i])
                Assert.Fail($"{what}: first difference at index {i}: expected {expected[i]}, got {actual[i]}; " +
                            $"expected [{string.Join(' ', expected.Skip(Math.Max(0, i - 3)).Take(8))}], " +
                            $"got [{string.Join(' ', actual.Skip(Math.Max(0, i - 3)).Take(8))}]");
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} ids, expected {expected.Length}");
    }

    /// <summary>
    /// Random text mixing ASCII words, digits, punctuation, apostrophes, whitespace runs (spaces, tabs, newlines,
    /// no-break and ideographic spaces), Cyrillic, CJK, emoji (with ZWJ sequences), combining marks, control characters,
    /// supplementary letters and digits.
    /// </summary>
    public static string RandomText(Random rng, int parts)
    {
        string[] pool =
        [
            "the", "The", "whale", "Ishmael", "don't", "'s", "'re", "'ll", "it's", "you've", "I'm", "we'd", "'t",
            "0", "42", "3.14", "1999", "½", "²", "Ⅻ",
            ",", ".", "!", "?", "...", "--", "\"", "'", "(", ")", "«", "»", "—", "$", "%", "&&", "```",
            " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00A0", "\u3000", "\u2009", "\u0085", "\v\f",
            "Привет", "мир", "中文", "我想在", "日本語", "한국어", "ก ข", "नमस्ते", "עברית", "عربى",
            "🦙", "🚀", "😶\u200d🌫️", "👍🏽", "✅", "e\u0301", "n\u0303o", "\u0301", "\u0000", "\u0001", "\u001B", "\u007F",
            "𝐀𝐁𝐂", "𝟘𝟙", "𠀀𠀁", "Führer", "Cửa Việt", "ÿ", "\u00AD",
        ];
        var sb = new StringBuilder();
        for (int i = 0; i < parts; i++)
        {
            sb.Append(pool[rng.Next(pool.Length)]);
            if (rng.Next(3) == 0) sb.Append(' ');
        }
        return sb.ToString();
    }

    /// <summary>Concatenation of streaming Push results for every id, then Flush.</summary>
    public static string Stream(ITokenizer tokenizer, ReadOnlySpan<int> ids)
    {
        var stream = tokenizer.NewStream();
        var sb = new StringBuilder();
        foreach (int id in ids) sb.Append(stream.Push(id));
        sb.Append(stream.Flush());
        return sb.ToString();
    }
}
