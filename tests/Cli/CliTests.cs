using UioLlm.Cli;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Cli;

public class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    [Fact]
    public void HelpListsTheKernelsCommand()
    {
        var (code, output, _) = Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("kernels", output);
    }

    [Fact]
    public void KernelsCommandMeasuresEveryKernel()
    {
        var (code, output, error) = Run("kernels", "--quick", "--threads", "1");
        Assert.True(code == 0, error);
        Assert.Contains("MatMul", output);
        Assert.Contains("Attention forward", output);
        Assert.Contains("Attention backward", output);
        Assert.Contains("GFLOP/s", output);
    }

    [Fact]
    public void NegativeThreadsIsAClearError()
    {
        var (code, _, error) = Run("kernels", "--threads", "-3");
        Assert.NotEqual(0, code);
        Assert.Contains("--threads", error);
    }

    [Fact]
    public void UnknownCommandFails()
    {
        var (code, _, error) = Run("frobnicate");
        Assert.NotEqual(0, code);
        Assert.False(string.IsNullOrWhiteSpace(error));
    }
}

public class CliModelCommandTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    private static string Stories(string file) => TestData.File("models", "stories260K", file);

    [DataFact]
    public void GreedyGenerateFromBosPrintsTheGoldenText()
    {
        var (code, output, error) = Run("generate", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
            "--temperature", "0", "--max-tokens", "200", "--threads", "1");
        Assert.True(code == 0, error);
        Assert.Equal(File.ReadAllText(Stories("expected_greedy_200steps.txt")), output.TrimEnd('\n'));
        Assert.Contains("200 tokens", error);
    }

    [DataFact]
    public void GenerateRunsAQuantisedGgufKeptQuantised()
    {
        // llama.cpp's own Q4_0 file (its tokenizer inside); llama-simple prints the same 20 tokens (llama-simple-A.txt).
        string model = TestData.File("models", "quantized", "stories260K-ff192.Q4_0.gguf");
        var (code, output, error) = Run("generate", "--model", model, "--prompt", "Once upon a time", "--temperature", "0",
            "--max-tokens", "20", "--threads", "1", "--keep-quantized");
        Assert.True(code == 0, error);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily. She loved to play outsid", output);
        (code, output, error) = Run("info", TestData.File("models", "quantized", "randB.Q4_K_M.gguf"));
        Assert.True(code == 0, error);
        Assert.Contains("Q4_K", output);
    }

    [DataFact]
    public void GenerateExplainsMissingOrWrongInputs()
    {
        var (code, _, error) = Run("generate", "--model", "/no/such/model.bin");
        Assert.Equal(2, code);
        Assert.Contains("--model", error);
        Assert.Contains("does not exist", error);

        (code, _, error) = Run("generate", "--model", Stories("stories260K.bin"));
        Assert.Equal(2, code);
        Assert.Contains("--tokenizer", error);

        (code, _, error) = Run("generate", "--model", Stories("stories260K.bin"), "--tokenizer", TestData.File("tokenizers", "gpt2", "ggml-vocab-gpt-2.gguf"));
        Assert.Equal(2, code);
        Assert.Contains("vocabulary", error);

        (code, _, error) = Run("generate", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"), "--max-tokens", "-5");
        Assert.Equal(2, code);
        Assert.Contains("--max-tokens", error);

        (code, _, error) = Run("generate", "--model", Stories("stories260K.bin"), "--max-tokens", "many");
        Assert.NotEqual(0, code);
        Assert.DoesNotContain("   at ", error);   // never a stack trace

        string truncated = Path.Combine(Path.GetTempPath(), $"uio-cli-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(truncated, File.ReadAllBytes(Stories("stories260K.bin"))[..5000]);
        try
        {
            (code, _, error) = Run("generate", "--model", truncated, "--tokenizer", Stories("tok512.bin"));
            Assert.Equal(2, code);
            Assert.Contains(truncated, error);
            Assert.Contains("bytes", error);
        }
        finally
        {
            File.Delete(truncated);
        }
    }

    [DataFact]
    public void TokenizeEncodesAndDecodes()
    {
        string spm = TestData.File("tokenizers", "llama2", "tokenizer.model");
        var (code, output, error) = Run("tokenize", "--tokenizer", spm, "--text", "Hello world");
        Assert.True(code == 0, error);
        Assert.Equal("1 15043 3186", output.Trim());
        (code, output, _) = Run("tokenize", "--tokenizer", spm, "--text", "Hello world", "--no-bos");
        Assert.Equal("15043 3186", output.Trim());
        (code, output, _) = Run("tokenize", "--tokenizer", spm, "--text", "15043 3186", "--decode");
        Assert.Equal("Hello world", output.Trim());
        (code, _, error) = Run("tokenize", "--tokenizer", spm, "--text", "15043 99999999", "--decode");
        Assert.Equal(2, code);
        Assert.Contains("99999999", error);
        (code, _, error) = Run("tokenize", "--tokenizer", spm);
        Assert.Equal(2, code);
        Assert.Contains("--text or --file", error);
        (code, _, error) = Run("tokenize", "--tokenizer", Stories("stories260K.bin"), "--text", "x");
        Assert.Equal(2, code);

        // tokenizer.json folders of today's model families, and a tiktoken encoding by name.
        string llama3 = Path.GetDirectoryName(TestData.File("tokenizers", "hf-json", "llama3", "tokenizer.json"))!;
        (code, output, error) = Run("tokenize", "--tokenizer", llama3, "--text", "Hello world");
        Assert.True(code == 0, error);
        Assert.Equal("128000 9906 1917", output.Trim());
        (code, output, error) = Run("tokenize", "--tokenizer", "cl100k_base", "--text", "Hello world", "--no-bos");
        Assert.True(code == 0, error);
        Assert.Equal("9906 1917", output.Trim());
    }

    [DataFact]
    public void InfoDescribesEveryFormat()
    {
        var (code, output, error) = Run("info", TestData.File("models", "llama-2-tiny-random", "llama-2-tiny-random.gguf"));
        Assert.True(code == 0, error);
        Assert.Contains("GGUF", output);
        Assert.Contains("F16", output);
        (code, output, _) = Run("info", Stories("stories260K.bin"));
        Assert.Equal(0, code);
        Assert.Contains("llama2.c", output);
        Assert.Contains("260,032", output);

        string dir = Path.Combine(Path.GetTempPath(), $"uio-cli-{Guid.NewGuid():N}");
        try
        {
            using var weights = UioLlm.Model.Formats.Llama2cCheckpoint.Load(Stories("stories260K.bin"), TestBackend.Shared);
            UioLlm.Model.Formats.HfCheckpoint.Save(weights, dir);
            (code, output, _) = Run("info", dir);
            Assert.Equal(0, code);
            Assert.Contains("Hugging Face", output);
            using var uio = new UioLlm.Model.Uio.UioModel(new UioLlm.Model.Modules.LlamaModel(weights),
                new UioLlm.Model.Uio.UioConfig { SegmentLength = 16, MemoryTokens = 4, EncoderRank = 2, EncoderAlpha = 4, TransferRank = 2, TransferAlpha = 4 });
            UioLlm.Model.Uio.UioAdapter.Save(uio, Path.Combine(dir, "adapter"));
            (code, output, _) = Run("info", Path.Combine(dir, "adapter"));
            Assert.Equal(0, code);
            Assert.Contains("UIO adapter", output);
            Assert.Contains("4x compression", output);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        (code, _, error) = Run("info", "/no/such/file");
        Assert.Equal(2, code);
        Assert.Contains("does not exist", error);
    }

    [DataFact]
    public void TrainWritesCheckpointsResumesAndItsAdapterGeneratesBeyondTheWindow()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"uio-train-{Guid.NewGuid():N}");
        string[] Train(string outDir, params string[] extra) => ["train", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
            "--data", TestData.File("text", "moby_dick_ch1.txt"), "--out", outDir, "--threads", "1", .. extra];
        try
        {
            var (code, output, error) = Run(Train(dir, "--segment", "16", "--memory", "4", "--rank", "2", "--alpha", "4",
                "--segments", "3", "--steps", "3", "--checkpoint-every", "2"));
            Assert.True(code == 0, error);
            Assert.Contains("step 3 (done)", output);
            Assert.True(Directory.Exists(Path.Combine(dir, "checkpoints", "step-00000002")));
            Assert.True(File.Exists(Path.Combine(dir, "metrics.jsonl")));

            // Running again on the same folder resumes (and finds the run complete).
            (code, output, error) = Run(Train(dir));
            Assert.True(code == 0, error);
            Assert.Contains("resumed", output);

            string adapter = Path.Combine(dir, "checkpoints", "step-00000003", "adapter");
            (code, output, error) = Run("generate", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
                "--adapter", adapter, "--prompt-file", TestData.File("text", "moby_dick_ch1.txt"), "--max-tokens", "5", "--temperature", "0", "--allow-extrapolation");
            Assert.True(code == 0, error);   // a 6.9K-token prompt: far beyond the model's 512 positions and UIO's budget of 2,000 tokens
            (code, _, error) = Run("generate", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
                "--adapter", adapter, "--prompt-file", TestData.File("text", "moby_dick_ch1.txt"), "--max-tokens", "5");
            Assert.Equal(2, code);   // without the flag: a one-line error naming the budget and the flag
            Assert.Contains("--allow-extrapolation", error);
            Assert.Contains("2000 tokens", error);

            (code, _, error) = Run(Train(dir + "-2", "--estimator", "magic"));
            Assert.Equal(2, code);
            Assert.Contains("--estimator", error);
            (code, _, error) = Run("train", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
                "--data", "/no/such/folder", "--out", dir + "-3");
            Assert.Equal(2, code);
            Assert.Contains("--data", error);
        }
        finally
        {
            foreach (var d in new[] { dir, dir + "-2", dir + "-3" })
                if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        }
    }

    [DataFact]
    public void EvalRunsTheRegisteredMethodsOnEveryTaskWithTablesCsvSvgAndRunRecords()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"uio-eval-{Guid.NewGuid():N}");
        try
        {
            string[] Eval(params string[] extra) => ["eval", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
                "--out", dir, "--threads", "1", .. extra];
            var (code, output, error) = Run(Eval("--task", "perplexity", "--methods", "base,streaming:sinks=2,full", "--data", TestData.File("text", "moby_dick_ch1.txt"), "--lengths", "64,1k"));
            Assert.True(code == 0, error);
            Assert.Contains("streaming (sinks=2)", output);
            Assert.Contains("1024 (2x)", output);
            var csv = File.ReadAllLines(Path.Combine(dir, "perplexity.csv"));
            Assert.Equal("length,method,perplexity,tail_perplexity,out_of_trained_range,kv_bytes,seconds", csv[0]);
            Assert.Equal(1 + 2 * 3, csv.Length);
            Assert.All(csv.Skip(1), line => Assert.True(double.Parse(line.Split(',')[2], System.Globalization.CultureInfo.InvariantCulture) > 1));
            Assert.Equal("1", csv.Single(l => l.StartsWith("1024,full,", StringComparison.Ordinal)).Split(',')[4]);   // past the 512-token window
            var svg = System.Xml.Linq.XDocument.Load(Path.Combine(dir, "perplexity.svg"));
            Assert.Equal(3, svg.Descendants().Count(e => e.Name.LocalName == "polyline"));
            using (var record = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "perplexity.run.json"))))
                Assert.Equal("2", record.RootElement.GetProperty("Methods")[1].GetProperty("Options").GetProperty("sinks").GetString());

            (code, output, error) = Run(Eval("--task", "passkey,niah,babilong", "--methods", "base", "--data", TestData.File("text", "moby_dick.txt"),
                "--lengths", "1k", "--trials", "1", "--depths", "0,1", "--template", TestData.File("longctx", "passkey_and_niah_templates.json"),
                "--babi", TestData.File("longctx", "babi", "en"), "--babilong-prompts", TestData.File("longctx", "babilong_prompts.json")));
            Assert.True(code == 0, error);
            foreach (var task in new[] { "passkey", "niah", "babilong" })
            {
                Assert.True(File.Exists(Path.Combine(dir, $"{task}.svg")), task);
                Assert.Equal(task == "babilong" ? 2 : 3, File.ReadAllLines(Path.Combine(dir, $"{task}.csv")).Length);
            }
            Assert.Contains("babilong accuracy", output);

            (code, output, _) = Run("eval", "--list-methods");
            Assert.Equal(0, code);
            Assert.Contains("lm-infinite", output);
            (code, _, error) = Run(Eval("--task", "perplexity", "--data", TestData.File("text", "moby_dick_ch1.txt"), "--lengths", "4q"));
            Assert.Equal(2, code);
            Assert.Contains("--lengths", error);
            (code, _, error) = Run(Eval("--task", "bleu", "--data", TestData.File("text", "moby_dick_ch1.txt")));
            Assert.Equal(2, code);
            Assert.Contains("--task", error);
            (code, _, error) = Run(Eval("--methods", "full,ring", "--data", TestData.File("text", "moby_dick_ch1.txt"), "--lengths", "64"));
            Assert.Equal(2, code);
            Assert.Contains("--methods: unknown method 'ring'", error);
            (code, _, error) = Run(Eval("--methods", "pi:factor=0.5", "--data", TestData.File("text", "moby_dick_ch1.txt"), "--lengths", "64"));
            Assert.Equal(2, code);
            Assert.Contains("option factor must lie in", error);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BenchPrintsTablesAndWritesJson()
    {
        string json = Path.Combine(Path.GetTempPath(), $"uio-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, error) = Run("bench", "inference", "--quick", "--threads", "1", "--json", json);
            Assert.True(code == 0, error);
            Assert.Contains("decode tok/s", output);
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
            var inference = doc.RootElement.GetProperty("Inference");
            Assert.True(inference.GetArrayLength() >= 1);
            Assert.All(inference.EnumerateArray(), r => Assert.True(r.GetProperty("DecodeTokensPerSecond").GetDouble() > 0));
        }
        finally
        {
            File.Delete(json);
        }
        var (bad, _, message) = Run("bench", "everything");
        Assert.Equal(2, bad);
        Assert.Contains("kernels, inference, training, methods, all", message);
    }

    [Fact]
    public void BenchMethodsTimesEveryTrainedMethodSideBySide()
    {
        string json = Path.Combine(Path.GetTempPath(), $"uio-bench-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, error) = Run("bench", "methods", "--quick", "--threads", "1", "--json", json);
            Assert.True(code == 0, error);
            Assert.Contains("interleaved", output);
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
            var rows = doc.RootElement.GetProperty("Methods").EnumerateArray().ToList();
            Assert.Equal(1 + UioLlm.Training.Methods.TrainableMethods.All.Count, rows.Count);
            // The benchmark's base has only global layers: every method runs, with its parameters counted.
            Assert.All(rows, r =>
            {
                Assert.Equal(System.Text.Json.JsonValueKind.Null, r.GetProperty("Failure").ValueKind);
                Assert.True(r.GetProperty("SecondsPerStep").GetDouble() > 0, r.GetProperty("Spec").GetString());
                Assert.True(r.GetProperty("TrainableParameters").GetInt64() > 0, r.GetProperty("Spec").GetString());
            });
        }
        finally
        {
            File.Delete(json);
        }
    }
}
