using System.Text.Json;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Training.Data.Synthetic;
using UioLlm.Training.Eval;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Methods;

public sealed class EvalHarnessTests
{
    [Fact]
    public void PerplexityIsThePrefixMeanOfEachMethodsLogProbs()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 16 }, seed: 40);
        var model = new LlamaModel(weights);
        var methods = MethodRegistry.Resolve("base,full,streaming", new MethodContext(model));
        try
        {
            int[] ids = new Rng(41).Ints(64, 0, 37);
            var progress = new List<EvalProgress>();
            var cells = Evaluator.Perplexity(methods, ids, [32, 16, 64], new InlineProgress(progress.Add));
            Assert.Equal(9, cells.Count);
            Assert.Equal(9, progress[^1].Done);
            foreach (var method in methods)
            {
                using var session = method.Create();
                var logProbs = session.Feed(ids.AsSpan(0, 16)).Concat(session.Feed(ids.AsSpan(16, 16))).Concat(session.Feed(ids.AsSpan(32))).ToArray();
                foreach (int length in new[] { 16, 32, 64 })
                {
                    var cell = cells.Single(c => c.Method == method.Label && c.Length == length);
                    Assert.Equal(LogProbs.Perplexity(logProbs.AsSpan(0, length)), cell.Perplexity, 9);
                    Assert.Equal(LogProbs.Perplexity(logProbs.AsSpan(length / 2, length - length / 2)), cell.TailPerplexity, 9);
                }
            }
            Assert.False(cells.Single(c => c.Method == "full" && c.Length == 16).OutOfRange);
            Assert.True(cells.Single(c => c.Method == "full" && c.Length == 32).OutOfRange);
            Assert.False(cells.Single(c => c.Method == "base" && c.Length == 64).OutOfRange);

            var table = EvalOutput.PerplexityTable(cells, 16);
            Assert.Equal(["method", "16 (1x)", "32 (2x)", "64 (4x)"], table.Columns);
            Assert.EndsWith(EvalOutput.OutOfRangeMarker, table.Rows[1][2]);
            var csv = EvalOutput.PerplexityCsv(cells).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("length,method,perplexity,tail_perplexity,out_of_trained_range,kv_bytes,seconds", csv[0]);
            Assert.Equal(10, csv.Length);
            var svg = System.Xml.Linq.XDocument.Parse(EvalOutput.PerplexitySvg(cells));
            Assert.Equal(3, svg.Descendants().Count(e => e.Name.LocalName == "polyline"));
            Assert.Contains("| method | 16 (1x) |", EvalOutput.Markdown(table));
            Assert.Throws<ArgumentOutOfRangeException>(() => Evaluator.Perplexity(methods, ids, [65]));
        }
        finally
        {
            foreach (var m in methods) m.Dispose();
        }
    }

    [Fact]
    public void RetrievalRunsEveryMethodOnTheSameSeededPromptsAndRecordsTheRun()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 16 }, seed: 42);
        var model = new LlamaModel(weights);
        var methods = MethodRegistry.Resolve("base,knn:k=2", new MethodContext(model));
        try
        {
            // A task answered by the model itself: the answer is the full-attention greedy token after the prompt.
            var asked = new List<(long Seed, int Length, double Depth)>();
            var task = new DelegateRetrievalTask("echo", usesDepth: true, (seed, length, depth) =>
            {
                asked.Add((seed, length, depth));
                var prompt = new Rng((int)seed).Ints(length, 0, 37);
                using var full = new FullAttentionSession(model);
                full.Prefill(prompt);
                return new RetrievalSample(prompt, UioLlm.Model.Generation.Sampler.ArgMax(full.LastLogits).ToString(System.Globalization.CultureInfo.InvariantCulture), 1, depth);
            }, (sample, generated) => generated.Length == 1 && generated[0].ToString(System.Globalization.CultureInfo.InvariantCulture) == sample.Answer);
            var cells = Evaluator.Retrieval(methods, task, [8, 40], [0, 1], trials: 3, seed: 7);
            Assert.Equal(2 * 2 * 2, cells.Count);
            Assert.Equal(2 * 2 * 3, asked.Count);
            Assert.Equal(3, asked.Select(a => a.Seed).Distinct().Count());   // the same three seeds at every length and depth
            // Inside the window every method sees the whole prompt: the full-attention answer.
            Assert.All(cells.Where(c => c.Length == 8), c => Assert.Equal(3, c.Correct));
            var byLength = EvalOutput.AccuracyByLength("echo", cells, 16);
            Assert.Equal("100 %", byLength.Rows[0][1]);
            var byDepth = EvalOutput.AccuracyByDepth("echo", cells);
            Assert.Equal(["method", "depth 0", "depth 1"], byDepth.Columns);
            Assert.Equal(9, EvalOutput.RetrievalCsv(cells).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);

            var record = EvalRecord.For("echo", methods, [8, 40], [0, 1], 3, 7, "tiny", "random", "test");
            using var json = JsonDocument.Parse(EvalOutput.RecordJson(record));
            Assert.Equal("2", json.RootElement.GetProperty("Methods")[1].GetProperty("Options").GetProperty("k").GetString());
            Assert.Equal(7, json.RootElement.GetProperty("Seed").GetInt64());
            Assert.Contains("cores", json.RootElement.GetProperty("Machine").GetString());
        }
        finally
        {
            foreach (var m in methods) m.Dispose();
        }
    }

    [DataFact]
    public void BabiLongScattersTheFactsInOrderThroughTheBookUpToTheLength()
    {
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        var questions = BabiReader.Read(Directory.GetFiles(TestData.File("longctx", "babi", "en"), "qa1_*_test.txt")[0], "qa1");
        Assert.Equal(1000, questions.Count);
        Assert.Equal(["John travelled to the hallway.", "Mary journeyed to the bathroom."], questions[0].Facts);
        Assert.Equal(("Where is John?", "hallway"), (questions[0].Question, questions[0].Answer));

        var task = new BabiLongRetrieval(TestData.File("longctx", "babi", "en"), TestData.File("longctx", "babilong_prompts.json"),
            File.ReadAllText(TestData.File("text", "moby_dick.txt")), tokenizer, ["qa1", "qa2"]);
        foreach (long seed in new long[] { 0, 1 })
        {
            var sample = task.Sample(seed, 2048, 0);
            Assert.InRange(sample.Prompt.Length, 1900, 2048);
            string text = tokenizer.Decode(sample.Prompt);
            Assert.Contains("<context>", text);
            Assert.EndsWith("Answer:", text.TrimEnd());
            Assert.StartsWith(seed == 0 ? "qa1" : "qa2", sample.Detail);
            // Every fact of the question appears inside the context, in story order.
            string question = sample.Detail[(sample.Detail.IndexOf(": ", StringComparison.Ordinal) + 2)..sample.Detail.IndexOf(" -> ", StringComparison.Ordinal)];
            var facts = (seed == 0 ? questions : BabiReader.Read(Directory.GetFiles(TestData.File("longctx", "babi", "en"), "qa2_*_test.txt")[0], "qa2"))
                .First(q => q.Question == question && q.Answer == sample.Answer && Order(text, q.Facts) > 0).Facts;
            Assert.True(Order(text, facts) > 0);
            Assert.True(task.IsCorrect(sample, tokenizer.Encode(" " + sample.Answer + ".\nMore")));
            Assert.False(task.IsCorrect(sample, tokenizer.Encode(" nowhere")));
        }
        Assert.Equal(task.Sample(3, 1024, 0).Prompt, task.Sample(3, 1024, 0).Prompt);
    }

    /// <summary>1 when every fact occurs after the previous one inside the context, else 0.</summary>
    private static int Order(string text, IReadOnlyList<string> facts)
    {
        int at = text.IndexOf("<context>", StringComparison.Ordinal);
        foreach (var fact in facts)
        {
            at = text.IndexOf(fact, at, StringComparison.Ordinal);
            if (at < 0) return 0;
            at += fact.Length;
        }
        return at < text.IndexOf("</context>", StringComparison.Ordinal) ? 1 : 0;
    }

    [DataFact]
    public void NeedleAndPasskeyPromptsHoldTheNeedleAtTheDepth()
    {
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        var haystack = Haystack.FromFile(TestData.File("text", "moby_dick.txt"));
        string templates = TestData.File("longctx", "passkey_and_niah_templates.json");
        var niah = NeedleRetrieval.Load(templates, haystack, tokenizer);
        Assert.Equal("eat a sandwich", niah.Answer);
        Assert.Equal("The best thing to do in San Francisco is", niah.AnswerLead);
        double previous = -1;
        foreach (double depth in new[] { 0, 0.5, 1 })
        {
            var sample = niah.Sample(5, 1000, depth);
            Assert.InRange(sample.Prompt.Length, 900, 1000);
            string text = tokenizer.Decode(sample.Prompt);
            double at = text.IndexOf("Dolores Park", StringComparison.Ordinal) / (double)text.Length;
            Assert.True(at > previous, $"depth {depth}");
            previous = at;
            Assert.EndsWith("Answer: The best thing to do in San Francisco is", text);
            Assert.True(niah.IsCorrect(sample, tokenizer.Encode(" to eat a Sandwich")));
        }
        var passkey = new PasskeyRetrieval(PasskeyTemplate.Load(templates), haystack, tokenizer);
        var p = passkey.Sample(9, 600, 0.5);
        Assert.Contains(p.Answer, tokenizer.Decode(p.Prompt));
        Assert.True(passkey.IsCorrect(p, tokenizer.Encode(" " + p.Answer)));
        Assert.Equal(p.Answer, passkey.Sample(9, 1200, 1).Answer);
    }

    private sealed class InlineProgress(Action<EvalProgress> report) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value) => report(value);
    }
}
