using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Kernels;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Demo;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.Uio;

namespace UioLlm.Training.Compare;

/// <summary>What <c>uio compare</c> runs: the demo's base and passkey task, and the trained methods to put side by side.</summary>
public sealed record CompareSettings
{
    /// <summary>The base, data and evaluation distances: the demo's (its UIO settings are UIO's here).</summary>
    public DemoSettings Demo { get; init; } = DemoSettings.Default;

    /// <summary>
    /// Method specs: "uio" (UIO with the demo's settings and the unbiased estimator) or a trainable method's
    /// "name:key=value:..."; empty: UIO and every registered trainable method with <see cref="DefaultSpec"/>.
    /// </summary>
    public IReadOnlyList<string> Methods { get; init; } = [];

    /// <summary>Contexts (windows) at which the memory each method holds is measured.</summary>
    public int MemoryWindows { get; init; } = 16;

    public static CompareSettings Quick => new() { Demo = DemoSettings.Quick, MemoryWindows = 4 };

    /// <summary>
    /// The spec a method runs with when none is given: options that fit the demo's window and segments (segment-wise
    /// methods read segments of the demo's l tokens; full-attention fine-tunes scale RoPE to cover the longest
    /// document of the comparison).
    /// </summary>
    public string DefaultSpec(string name)
    {
        long longest = Math.Max(Math.Max((long)(Demo.EvalDistances.Max() + 1) * Demo.SegmentLength + 1, (long)(Demo.Curriculum[^1] + 2 + Demo.ExtraSegments) * Demo.SegmentLength + 1),
            (long)MemoryWindows * Demo.Window);
        return MethodSpecs.Default(name, Demo.Window, Demo.SegmentLength, Demo.MemoryTokens, longest);
    }

    /// <summary>The specs to run (the given ones, a bare name taking <see cref="DefaultSpec"/>; or UIO plus every registered trainable method).</summary>
    public IReadOnlyList<string> Specs() =>
        Methods.Count > 0 ? Methods.Select(m => m.Contains(':') ? m : DefaultSpec(m)).ToList() : ["uio", .. TrainableMethods.All.Select(m => DefaultSpec(m.Name))];
}

/// <summary>One method's row of the comparison.</summary>
/// <param name="TrainableParameters">Parameters the method trains.</param>
/// <param name="SecondsPerStep">Mean wall time of a training step (same documents per step for every method).</param>
/// <param name="MemoryBytes">Keys/values or memory the method holds after reading <see cref="CompareSettings.MemoryWindows"/> windows.</param>
/// <param name="FinalLoss">Mean training loss (answer only) over the last 50 steps.</param>
public sealed record CompareRow(string Method, string Spec, long TrainableParameters, double SecondsPerStep, long MemoryBytes, double FinalLoss,
    IReadOnlyList<DemoDistanceAccuracy> Distances, string? Failure = null)
{
    /// <summary>Mean accuracy over the distances beyond the base's window (the needle at least 2 segments back).</summary>
    public double FarAccuracy => Distances.Where(d => d.Distance >= 2).Select(d => d.Accuracy).DefaultIfEmpty(0).Average();
}

/// <summary>Everything a comparison measured.</summary>
public sealed record CompareResult(IReadOnlyList<CompareRow> Rows, CompareSettings Settings, TimeSpan Elapsed, string Device, bool BaseFromCache);

/// <summary>
/// The paper's comparison in miniature on the demo's task: every method trained on the same frozen base (the
/// demo's, cached in the output folder) with the same data (the demo's distance curriculum, answer-only loss), the
/// same steps, documents per step and learning rate, then evaluated on the same held-out passkey prompts by distance
/// through its own inference session (<see cref="ITrainableMethod.OpenSession"/>), with its trainable parameter count,
/// training time per step and the memory it holds at 16 windows. A method that fails to train or evaluate is reported
/// with its error, and the others go on.
/// </summary>
public sealed class CompareRunner(CompareSettings settings, IProgress<DemoProgress>? progress = null, string? outFolder = null)
{
    public const string BasePhase = "base";

    private readonly CompareSettings settings = settings ?? throw new ArgumentNullException(nameof(settings));

    public CompareResult Run()
    {
        var demo = settings.Demo;
        demo.Validate();
        var clock = Stopwatch.StartNew();
        using var accelerator = Accelerator.Create(AcceleratorKind.Auto, demo.Threads);
        string folder = outFolder ?? Path.Combine(Path.GetTempPath(), "uio-compare-" + Guid.NewGuid().ToString("N"));
        try
        {
            var runner = new DemoRunner(demo, progress);
            progress?.Report(new DemoProgress(BasePhase, 0, 1, "loading or pre-training the demo's base"));
            var (weights, fromCache) = runner.PrepareBase(accelerator, Path.Combine(folder, "base"));
            using (weights)
            {
                progress?.Report(new DemoProgress(BasePhase, 1, 1, fromCache ? "loaded from the cache" : "pre-trained"));
                var model = new LlamaModel(weights);
                var rows = settings.Specs().Select(spec => RunMethod(runner, model, spec, Path.Combine(folder, "compare", DemoRunner.Slug(spec)))).ToList();
                return new CompareResult(rows, settings, clock.Elapsed, accelerator.Description, fromCache);
            }
        }
        finally
        {
            if (outFolder is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private ITrainableMethod Create(LlamaModel model, string spec)
    {
        var demo = settings.Demo;
        if (spec == "uio")
        {
            var run = new DemoUioRun(DemoEstimator.Unbiased, demo.EstimatorWindow, DemoRegime.Curriculum);
            return UioTrainable.Unbiased(model, demo.UioConfig(run) with { AllowExtrapolation = true }, demo.EstimatorWindow, Seeds.Derive(demo.Seed, 3));
        }
        return TrainableMethods.Create(spec, model, Seeds.Derive(demo.Seed, 3));
    }

    /// <summary>
    /// What identifies a method's row: the base (fingerprint and checksum), the spec, and every setting of the
    /// training and evaluation. A row is read back from its folder's <see cref="RowFile"/> only when this matches.
    /// </summary>
    public static string RowFingerprint(DemoRunner runner, CompareSettings settings, string spec)
    {
        var d = settings.Demo;
        return string.Create(CultureInfo.InvariantCulture,
            $"{runner.BaseIdentity};spec={spec};l={d.SegmentLength};n={d.MemoryTokens};rank={d.Rank};alpha={d.Alpha};s={d.EstimatorWindow};lr={d.UioLearningRate};" +
            $"batch={d.UioBatch};curriculum={string.Join('-', d.Curriculum)};stage={d.StageSteps};extra={d.ExtraSegments};" +
            $"distances={string.Join('-', d.EvalDistances)};trials={d.DistanceTrials};memory-windows={settings.MemoryWindows};workers={Workers(d)}");
    }

    /// <summary>A finished method's row, cached in its folder so that a re-run (or a run stopped halfway) measures only the methods it lacks.</summary>
    public const string RowFile = "row.json";

    private static int Workers(DemoSettings demo) => Math.Min(demo.UioBatch, demo.Threads > 0 ? demo.Threads : Environment.ProcessorCount);

    private CompareRow RunMethod(DemoRunner runner, LlamaModel model, string spec, string folder)
    {
        string fingerprint = RowFingerprint(runner, settings, spec);
        if (CompareRowFile.TryRead(Path.Combine(folder, RowFile), fingerprint) is { } cached)
        {
            progress?.Report(new DemoProgress(cached.Method, 1, 1, $"read from the cache {folder} (fingerprint matches; delete the folder to train again)"));
            return cached;
        }
        var row = MeasureMethod(runner, model, spec, folder);
        if (row.Failure is null) CompareRowFile.Write(Path.Combine(folder, RowFile), fingerprint, row);
        return row;
    }

    private CompareRow MeasureMethod(DemoRunner runner, LlamaModel model, string spec, string folder)
    {
        var demo = settings.Demo;
        ITrainableMethod method;
        try
        {
            method = Create(model, spec);
        }
        catch (ArgumentException e)
        {
            return new CompareRow(spec, spec, 0, 0, 0, double.NaN, [], $"cannot be built: {e.Message}");
        }
        using (method)
        {
            string name = method.Name == spec ? spec : $"{method.Name} ({spec})";
            long parameters = method.Parameters.Sum(p => (long)p.Parameter.Value.Length);
            double finalLoss = double.NaN;
            double seconds = 0;
            int steps = 0;
            try
            {
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
                int total = demo.Curriculum.Length * demo.StageSteps, before = 0;
                for (int stage = 0; stage < demo.Curriculum.Length; stage++)
                {
                    var data = new PasskeyTrainingData(runner.Documents, Seeds.Derive(demo.Seed, 100 + stage), demo.SegmentLength, 1, demo.Curriculum[stage], demo.ExtraSegments);
                    var options = new TrainingOptions
                    {
                        TotalSteps = demo.StageSteps, DocumentsPerStep = demo.UioBatch,
                        Workers = Workers(demo),
                        PeakLearningRate = demo.UioLearningRate, MinLearningRate = demo.UioLearningRate / 10,
                        WarmupSteps = Math.Max(1, demo.StageSteps / 20), Seed = demo.Seed + stage, WeightDecay = 0f, BaseModelNameOrPath = "uio-demo-base",
                    };
                    var (stageSeconds, stageLoss) = MethodTraining.Run(method, data, options, Path.Combine(folder, $"stage-{stage}"), (step, recent) =>
                        progress?.Report(new DemoProgress(name, before + step, total, $"distance 1-{demo.Curriculum[stage]}, loss {recent:F3}")));
                    seconds += stageSeconds;
                    finalLoss = stageLoss;
                    steps += demo.StageSteps;
                    before += demo.StageSteps;
                }
                method.SaveAdapter(Path.Combine(folder, "adapter"), "uio-demo-base");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return new CompareRow(name, spec, parameters, steps > 0 ? seconds / steps : 0, 0, double.NaN, [], $"training failed: {e.Message}");
            }
            try
            {
                return new CompareRow(name, spec, parameters, seconds / steps, MemoryAt(runner, method), finalLoss, Evaluate(runner, method, name));
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return new CompareRow(name, spec, parameters, seconds / steps, 0, finalLoss, [], $"evaluation failed: {e.Message}");
            }
        }
    }

    /// <summary>Accuracy by distance on the demo's held-out distance prompts, greedy, through the method's own session.</summary>
    private List<DemoDistanceAccuracy> Evaluate(DemoRunner runner, ITrainableMethod method, string name)
    {
        var prompts = runner.DistanceDocuments().ToList();
        var correct = new Dictionary<int, int>();
        var tokens = new Dictionary<int, int>();
        int done = 0;
        foreach (var (distance, document) in prompts)
        {
            using var session = method.OpenSession();
            session.Prefill(document.Prompt);
            var answer = new int[runner.Documents.KeyTokens];
            for (int i = 0; i < answer.Length; i++)
            {
                answer[i] = Model.Generation.Sampler.ArgMax(session.LastLogits);
                if (i + 1 < answer.Length) session.Feed([answer[i]]);
            }
            if (runner.Vocabulary.Decode(answer) == document.Key) correct[distance] = correct.GetValueOrDefault(distance) + 1;
            tokens[distance] = document.Tokens.Length;
            progress?.Report(new DemoProgress(name, ++done, prompts.Count, $"evaluating, {distance} segments back"));
        }
        return settings.Demo.EvalDistances
            .Select(d => new DemoDistanceAccuracy(name, d, tokens.GetValueOrDefault(d), correct.GetValueOrDefault(d), settings.Demo.DistanceTrials))
            .ToList();
    }

    /// <summary>Bytes of keys/values or memory the method holds after reading a document of <see cref="CompareSettings.MemoryWindows"/> windows.</summary>
    private long MemoryAt(DemoRunner runner, ITrainableMethod method)
    {
        var document = runner.Documents.AtDepth(Seeds.Derive(settings.Demo.Seed + 4_000_037, 0), settings.MemoryWindows * settings.Demo.Window, 0.0);
        using var session = method.OpenSession();
        session.Prefill(document.Prompt);
        return session.KvBytes;
    }

}

/// <summary>
/// A comparison row on disk: a JSON object with the fingerprint it was measured under. Read back only when that
/// fingerprint matches and the file parses; a damaged file is measured again, never trusted.
/// </summary>
public static class RowFile
{
    /// <summary>Writes <paramref name="body"/> plus the fingerprint to <paramref name="path"/> atomically (its folder created).</summary>
    public static void Write(string path, string fingerprint, JsonObject body)
    {
        ArgumentNullException.ThrowIfNull(body);
        body["fingerprint"] = fingerprint;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(body.ToJsonString(new JsonSerializerOptions { WriteIndented = true }))));
    }

    /// <summary><paramref name="read"/>'s row from the file, or null when it is missing, damaged, measured under another fingerprint, or <paramref name="read"/> refuses it.</summary>
    public static T? TryRead<T>(string path, string fingerprint, Func<JsonElement, T?> read) where T : class
    {
        ArgumentNullException.ThrowIfNull(read);
        if (!File.Exists(path)) return null;
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(path));
            return json.RootElement.GetProperty("fingerprint").GetString() == fingerprint ? read(json.RootElement) : null;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IOException)
        {
            return null;
        }
    }
}

/// <summary>A measured passkey row on disk (<see cref="RowFile"/>).</summary>
public static class CompareRowFile
{
    public static void Write(string path, string fingerprint, CompareRow row) => RowFile.Write(path, fingerprint, new JsonObject
    {
        ["method"] = row.Method, ["spec"] = row.Spec, ["trainable_parameters"] = row.TrainableParameters,
        ["seconds_per_step"] = row.SecondsPerStep, ["memory_bytes"] = row.MemoryBytes, ["final_loss"] = row.FinalLoss,
        ["distances"] = new JsonArray(row.Distances.Select(d => (JsonNode?)new JsonObject
        {
            ["distance"] = d.Distance, ["tokens"] = d.Tokens, ["correct"] = d.Correct, ["trials"] = d.Trials,
        }).ToArray()),
    });

    /// <summary>The row at <paramref name="path"/> when it exists, parses and was measured under <paramref name="fingerprint"/>; null otherwise.</summary>
    public static CompareRow? TryRead(string path, string fingerprint) => RowFile.TryRead(path, fingerprint, root =>
    {
        string method = root.GetProperty("method").GetString() ?? throw new FormatException("method");
        var distances = root.GetProperty("distances").EnumerateArray()
            .Select(e => new DemoDistanceAccuracy(method, e.GetProperty("distance").GetInt32(), e.GetProperty("tokens").GetInt32(), e.GetProperty("correct").GetInt32(), e.GetProperty("trials").GetInt32()))
            .ToList();
        if (distances.Count == 0 || distances.Any(d => d.Trials <= 0 || d.Correct < 0 || d.Correct > d.Trials)) return null;
        return new CompareRow(method, root.GetProperty("spec").GetString() ?? "", root.GetProperty("trainable_parameters").GetInt64(),
            root.GetProperty("seconds_per_step").GetDouble(), root.GetProperty("memory_bytes").GetInt64(), root.GetProperty("final_loss").GetDouble(), distances);
    });
}

/// <summary>The comparison as CSV (one line per method and distance, then the efficiency columns).</summary>
public static class CompareCsv
{
    public const string Header = "method,spec,distance_segments,tokens,correct,trials,accuracy,trainable_parameters,seconds_per_step,memory_bytes,final_loss,failure";

    public static string Write(CompareResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var lines = new List<string> { Header };
        foreach (var row in result.Rows)
        {
            string tail = string.Create(CultureInfo.InvariantCulture, $"{row.TrainableParameters},{row.SecondsPerStep:G4},{row.MemoryBytes},{row.FinalLoss:G4},{Eval.EvalOutput.Quote(row.Failure ?? "")}");
            if (row.Distances.Count == 0) lines.Add($"{Eval.EvalOutput.Quote(row.Method)},{Eval.EvalOutput.Quote(row.Spec)},,,,,,{tail}");
            foreach (var d in row.Distances)
                lines.Add(string.Create(CultureInfo.InvariantCulture, $"{Eval.EvalOutput.Quote(row.Method)},{Eval.EvalOutput.Quote(row.Spec)},{d.Distance},{d.Tokens},{d.Correct},{d.Trials},{d.Accuracy:G4},{tail}"));
        }
        return string.Join('\n', lines) + "\n";
    }
}
