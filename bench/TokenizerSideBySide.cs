using System.Diagnostics;
using System.Text;
using UioLlm.Model.Tokenizers;

namespace UioLlm.Bench;

/// <summary>
/// Tokenizer throughput on a book (Moby Dick, 1.2 MB): encode with an empty word cache (a fresh tokenizer,
/// the cost a new document pays), encode again with the cache warm, and decode, in MB of text per second on
/// one thread. GPT-2's row is the reference for the tokenizer.json rows (issue 18: at least as fast per byte).
/// </summary>
internal static class TokenizerSideBySide
{
    public static void Run(TextWriter output, bool quick)
    {
        string? book = BenchData.Find("text", "moby_dick.txt");
        string? spm = BenchData.Find("tokenizers", "llama2", "tokenizer.model");
        string? gpt2 = BenchData.Find("tokenizers", "gpt2", "encoder.json");
        if (book is null || spm is null || gpt2 is null)
        {
            output.WriteLine("tokenizers: shared data not found (set UIOLLM_DATA); skipped");
            return;
        }
        string text = File.ReadAllText(book);
        double megabytes = Encoding.UTF8.GetByteCount(text) / 1e6;
        int repeats = quick ? 2 : 5;
        output.WriteLine($"text: {Path.GetFileName(book)}, {megabytes:F2} MB; best of {repeats}");
        output.WriteLine($"{"tokenizer",-28} {"tokens",8} {"cold MB/s",10} {"warm MB/s",10} {"decode MB/s",12}");
        Measure(output, "SentencePiece (Llama 2)", () => Tokenizer.Load(spm), text, megabytes, repeats);
        Measure(output, "byte-level BPE (GPT-2)", () => Tokenizer.Load(Path.GetDirectoryName(gpt2)!), text, megabytes, repeats);
        // tokenizer.json as Hugging Face defines it (ours), and the tiktoken encodings (Microsoft.ML.Tokenizers).
        foreach (var (name, folder) in new[] { ("tokenizer.json Llama 3", "llama3"), ("tokenizer.json Qwen3", "qwen3"), ("tokenizer.json Mistral-style", "spm-bpe-32k") })
        {
            string? json = BenchData.Find("tokenizers", "hf-json", folder, "tokenizer.json");
            if (json is null) output.WriteLine($"{name}: not found; skipped");
            else Measure(output, name, () => Tokenizer.Load(json), text, megabytes, repeats);
        }
        Measure(output, "tiktoken cl100k (ML.Tok.)", () => Tokenizer.Load("cl100k_base"), text, megabytes, repeats);
        Measure(output, "tiktoken o200k (ML.Tok.)", () => Tokenizer.Load("o200k_base"), text, megabytes, repeats);
    }

    private static void Measure(TextWriter output, string name, Func<ITokenizer> load, string text, double megabytes, int repeats)
    {
        double cold = 0, warm = 0, decode = 0;
        int tokens = 0;
        for (int r = 0; r < repeats; r++)
        {
            var tokenizer = load();
            // The loader's garbage (a 9-11 MB tokenizer.json) is collected before the clock starts, so that a
            // full collection does not land in one tokenizer's cold encode and not in another's.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            var clock = Stopwatch.StartNew();
            int[] ids = tokenizer.Encode(text);
            cold = Math.Max(cold, megabytes / clock.Elapsed.TotalSeconds);
            clock.Restart();
            ids = tokenizer.Encode(text);
            warm = Math.Max(warm, megabytes / clock.Elapsed.TotalSeconds);
            clock.Restart();
            string back = tokenizer.Decode(ids);
            decode = Math.Max(decode, megabytes / clock.Elapsed.TotalSeconds);
            if (back.Length == 0) throw new InvalidOperationException($"{name}: decoding gave no text");
            tokens = ids.Length;
        }
        output.WriteLine($"{name,-28} {tokens,8} {cold,10:F1} {warm,10:F1} {decode,12:F1}");
    }
}
