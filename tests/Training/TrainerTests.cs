using System.Text.Json;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;
using UioLlm.Training;
using UioLlm.Training.Estimators;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Training;

public sealed class TrainerTests : IDisposable
{
    private const int L = 4, N = 2, Vocab = 37;
    private readonly string root = Path.Combine(Path.GetTempPath(), "uiollm-trainer-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
    }

    private string Folder(string name) => Path.Combine(root, name);

    /// <summary>A tiny frozen base model (seeded) for UIO models with l = 4, n = 2.</summary>
    private static LlamaModel Base(int seed) =>
        new(GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, seed));

    /// <summary>A UIO model over <paramref name="baseModel"/> with every adapter non-zero.</summary>
    private static UioModel Uio(LlamaModel baseModel, int seed)
    {
        var uio = new UioModel(baseModel, UioModelTests.Small(l: L, n: N), seed);
        UioModelTests.Randomise(uio, seed + 1, std: 0.3f);
        return uio;
    }

    /// <summary><paramref name="count"/> random documents of <paramref name="segments"/> segments each.</summary>
    private static int[][] Documents(int seed, int count, int segments)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, count).Select(_ => rng.Ints(segments * L + 1, 0, Vocab)).ToArray();
    }

    private static float[][] Values(UioModel uio) => uio.TrainableParameters().Select(p => p.Value.ToArray()).ToArray();

    private static EstimatorFactory Unbiased => seed => new UnbiasedIncremental(reservoirSize: 1, seed);

    // ------------------------------------------------------------------ schedule

    [Fact]
    public void ScheduleWarmsUpLinearlyThenFollowsACosineToTheMinimum()
    {
        var s = new WarmupCosineSchedule(1e-3f, totalSteps: 110, warmupSteps: 10);
        Assert.Equal(1e-4f, s.At(1), 1e-9f);
        Assert.Equal(5e-4f, s.At(5), 1e-9f);
        Assert.Equal(1e-3f, s.At(10), 1e-9f);
        Assert.Equal(1e-3f * 0.5f * (1 + MathF.Cos(MathF.PI * 0.25f)), s.At(35), 1e-8f);
        Assert.Equal(5e-4f, s.At(60), 1e-8f);
        Assert.Equal(0f, s.At(110), 1e-9f);
        Assert.True(s.At(100) > s.At(101));

        var floor = new WarmupCosineSchedule(1e-3f, totalSteps: 110, warmupSteps: 10, minLearningRate: 1e-4f);
        Assert.Equal(1e-4f, floor.At(110), 1e-9f);
        Assert.Equal(5.5e-4f, floor.At(60), 1e-8f);

        // The paper's 1% warm-up: 10,000 steps warm up over 100; a short run still gets one step.
        Assert.Equal(100, WarmupCosineSchedule.WarmupStepsFor(0.01, 10_000));
        Assert.Equal(1, WarmupCosineSchedule.WarmupStepsFor(0.01, 30));
        Assert.Equal(100, new TrainingOptions { TotalSteps = 10_000 }.ResolvedWarmupSteps);
        Assert.Equal(1e-4f, new TrainingOptions { TotalSteps = 10_000 }.Schedule().At(100));

        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(111));
        Assert.Throws<ArgumentOutOfRangeException>(() => new WarmupCosineSchedule(1e-3f, 10, 11));
    }

    // ------------------------------------------------------------------ optimizer and clipping

    [Fact]
    public void WeightDecayShrinksTheLoraMatricesButNotTheMemoryEmbedding()
    {
        using var uio = Uio(Base(1), 1);
        uio.MemoryEmbedding.Value.CopyFrom(new Rng(2).Normal(uio.MemoryEmbedding.Value.Length));
        var before = Values(uio);
        using var optimizer = AdamW.ForUio(uio, new AdamWSettings(WeightDecay: 0.1f));
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        // With zero gradients Adam's move is 0, so only the decay p *= 1 - lr * wd acts.
        optimizer.Step(0.5f);

        var after = Values(uio);
        var parameters = uio.TrainableParameters().ToList();
        int memory = parameters.IndexOf(uio.MemoryEmbedding);
        Assert.True(memory >= 0);
        Assert.Equal(before[memory], after[memory]);
        Assert.False(optimizer.Parameters[memory].Decay);
        int decayed = 0;
        for (int i = 0; i < parameters.Count; i++)
        {
            if (i == memory) continue;
            Assert.True(optimizer.Parameters[i].Decay);
            Check.Close(before[i].Select(x => x * 0.95f).ToArray(), after[i], 1e-7, 1e-6, parameters[i].Name ?? $"parameter {i}");
            if (before[i].Any(x => x != 0)) decayed++;
        }
        Assert.True(decayed > 0);
        Assert.Equal(1, optimizer.StepCount);
    }

    [Fact]
    public void ClippingCapsTheGlobalNormAndLeavesSmallGradientsAlone()
    {
        var acc = TestBackend.Shared;
        using var a = acc.FromArray([3f, 0f], [2]);
        using var b = acc.FromArray([0f, 4f, 0f], [3]);
        float norm = GradientClipping.ClipGlobalNorm(acc.Kernels, [a, b], maxNorm: 1f);
        Assert.Equal(5f, norm, 1e-5f);
        Assert.Equal(1f, acc.Kernels.GlobalNorm([a, b]), 1e-5f);
        Assert.Equal(new[] { 0.6f, 0f }, a.ToArray().Select(x => MathF.Round(x, 5)));
        Assert.Equal(new[] { 0f, 0.8f, 0f }, b.ToArray().Select(x => MathF.Round(x, 5)));

        float small = GradientClipping.ClipGlobalNorm(acc.Kernels, [a, b], maxNorm: 2f);
        Assert.Equal(1f, small, 1e-5f);
        Assert.Equal(0.6f, a.ToArray()[0], 1e-6f);
        Assert.Throws<ArgumentOutOfRangeException>(() => GradientClipping.ClipGlobalNorm(acc.Kernels, [a], 0f));
    }

    [Fact]
    public void TrainerClipsEveryStepToTheConfiguredNorm()
    {
        var baseModel = Base(3);
        using var uio = Uio(baseModel, 3);
        var data = new InMemoryTrainingData(Documents(4, 2, segments: 3));
        var options = new TrainingOptions { TotalSteps = 3, MaxGradNorm = 1e-3f, PeakLearningRate = 1e-2f };
        var reports = new List<TrainingProgress>();
        using var trainer = new Trainer(uio, data, _ => new FullBptt(), options, Folder("clip"),
            new TrainerCallbacks { Progress = new SyncProgress(reports) });
        var r = trainer.TrainStep();
        Assert.True(r.GradNorm > 1e-3f, $"norm {r.GradNorm} should exceed the cap for the test to mean anything");
        Assert.True(r.Clipped);
        Assert.Single(reports);
        Assert.Equal(r.GradNorm, reports[0].GradNorm);
        // Gradients are zeroed after the step.
        Assert.All(uio.TrainableParameters(), p => Assert.All(p.Grad!.ToArray(), g => Assert.Equal(0f, g)));
    }

    // ------------------------------------------------------------------ training

    [Fact]
    public void LossGoesDownOnARepeatingExample()
    {
        var baseModel = Base(5);
        using var uio = Uio(baseModel, 5);
        var data = new InMemoryTrainingData(Documents(6, 1, segments: 3));
        var options = new TrainingOptions { TotalSteps = 30, PeakLearningRate = 2e-2f, WarmupSteps = 2, WeightDecay = 0f };
        using var trainer = new Trainer(uio, data, _ => new FullBptt(), options, Folder("loss"));
        var losses = Enumerable.Range(0, 30).Select(_ => trainer.TrainStep().Loss).ToArray();
        double first = losses[0], last = losses[^5..].Average();
        Assert.True(last < 0.8 * first, $"loss {first:F4} -> {last:F4} over 30 steps: [{string.Join(", ", losses.Select(x => x.ToString("F3")))}]");
        Assert.Equal(30, trainer.Step);
        Assert.Throws<InvalidOperationException>(() => trainer.TrainStep());
    }

    [Fact]
    public void StepLossIsTheMeanPerTokenOverTheAccumulatedDocuments()
    {
        var baseModel = Base(7);
        using var uio = Uio(baseModel, 7);
        var docs = new[] { new Rng(8).Ints(2 * L + 1, 0, Vocab), new Rng(9).Ints(4 * L + 1, 0, Vocab) };
        // sum_t J_t of each document at the starting parameters, measured by the estimator itself.
        double total = docs.Sum(d => new FullBptt().Accumulate(uio, d).Loss);
        var options = new TrainingOptions { TotalSteps = 1, DocumentsPerStep = 2 };
        using var trainer = new Trainer(uio, new InMemoryTrainingData(docs), _ => new FullBptt(), options, Folder("mean"));
        var r = trainer.TrainStep();
        Assert.Equal(total / 6, r.Loss, 1e-5);
        Assert.Equal(6 * L, r.Tokens);
        Assert.Equal(2, r.Documents);
    }

    [Fact]
    public void WorkersComputeTheSameStepAsOneThreadAndRepeatBitForBit()
    {
        var baseModel = Base(20);
        var docs = Documents(21, 5, segments: 3);
        var options = new TrainingOptions { TotalSteps = 3, DocumentsPerStep = 5, PeakLearningRate = 1e-2f, WarmupSteps = 1, Seed = 5 };
        (float[][] Values, double[] Losses) Train(int workers, string name)
        {
            using var uio = Uio(baseModel, 22);
            using var trainer = new Trainer(uio, new InMemoryTrainingData(docs, shuffleSeed: 23), Unbiased, options with { Workers = workers }, Folder(name));
            var losses = Enumerable.Range(0, 3).Select(_ => trainer.TrainStep().Loss).ToArray();
            return (Values(uio), losses);
        }
        var one = Train(1, "one");
        var two = Train(2, "two");
        var three = Train(3, "three");
        // Each document's gradient is the same; only the order of the sums differs.
        foreach (var other in new[] { two, three })
        {
            for (int i = 0; i < one.Losses.Length; i++) Assert.Equal(one.Losses[i], other.Losses[i], 1e-5);
            for (int p = 0; p < one.Values.Length; p++)
                for (int j = 0; j < one.Values[p].Length; j++)
                    Assert.Equal(one.Values[p][j], other.Values[p][j], 1e-4f);
        }
        using (var fresh = Uio(baseModel, 22)) Assert.NotEqual(Values(fresh)[1], one.Values[1]);   // the steps did move the adapter
        // A given worker count repeats bit for bit.
        var again = Train(2, "two-again");
        Assert.Equal(two.Losses, again.Losses);
        for (int p = 0; p < two.Values.Length; p++) Assert.Equal(two.Values[p], again.Values[p]);
        Assert.Throws<ArgumentOutOfRangeException>(() => new TrainingOptions { TotalSteps = 1, Workers = 0 }.Validate());
    }

    private sealed class Collect(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }

    [Fact]
    public void AnyTrainableMethodTrainsCheckpointsAndResumesBitIdentically()
    {
        var baseModel = Base(30);
        var docs = Documents(31, 4, segments: 3);
        var options = new TrainingOptions { TotalSteps = 6, DocumentsPerStep = 2, PeakLearningRate = 1e-2f, WarmupSteps = 1, Seed = 7, Workers = 2 };
        UioLlm.Training.Methods.ITrainableMethod Make(int seed) => UioLlm.Training.Methods.TrainableMethods.Create("longlora:rank=2:alpha=4:group=4", baseModel, seed);
        float[][] ValuesOf(UioLlm.Training.Methods.ITrainableMethod m) => m.Parameters.Select(p => p.Parameter.Value.ToArray()).ToArray();

        using var straight = Make(32);
        var losses = new List<double>();
        var callbacks = new TrainerCallbacks { Progress = new Collect(p => losses.Add(p.Loss)) };
        using (var trainer = new Trainer(straight, new InMemoryTrainingData(docs, shuffleSeed: 33), options, Folder("any-straight"), callbacks))
        {
            Assert.Same(straight, trainer.Method);
            Assert.Throws<InvalidOperationException>(() => trainer.Model);   // not a UIO model
            Assert.True(trainer.Run().Completed);
        }
        Assert.Equal(6, losses.Count);
        Assert.True(losses[^1] < losses[0], $"loss {losses[0]} -> {losses[^1]}");

        using (var resumed = Make(32))
        {
            using (var trainer = new Trainer(resumed, new InMemoryTrainingData(docs, shuffleSeed: 33), options, Folder("any-resumed")))
                trainer.Run(stopAfterStep: 2);
            using var again = Make(99);   // other starting values: everything must come from the checkpoint
            using (var trainer = Trainer.Resume(Folder("any-resumed"), again, new InMemoryTrainingData(docs, shuffleSeed: 33)))
            {
                Assert.Equal(2, trainer.Step);
                trainer.Run();
            }
            var expected = ValuesOf(straight);
            var actual = ValuesOf(again);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i]);
        }

        // A checkpoint of another method (or other options) is refused, naming what it holds.
        using var other = UioLlm.Training.Methods.TrainableMethods.Create("longlora:rank=4:alpha=4:group=4", baseModel, 1);
        var e = Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(Folder("any-resumed"), other, new InMemoryTrainingData(docs)));
        Assert.Contains("rank=2", e.Message);
        using var uio = Uio(baseModel, 5);
        Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(Folder("any-resumed"), uio, new InMemoryTrainingData(docs), Unbiased));
    }

    [Fact]
    public void ResumingFromACheckpointEndsBitIdenticalToAnUninterruptedRun()
    {
        var baseModel = Base(10);
        var docs = Documents(11, 5, segments: 4);
        var options = new TrainingOptions
        {
            TotalSteps = 12, DocumentsPerStep = 2, PeakLearningRate = 1e-2f, WarmupSteps = 3, Seed = 42, MaxGradNorm = 0.5f,
        };

        using var straight = Uio(baseModel, 12);
        using (var trainer = new Trainer(straight, new InMemoryTrainingData(docs, shuffleSeed: 13), Unbiased, options, Folder("straight")))
        {
            var result = trainer.Run();
            Assert.True(result.Completed);
            Assert.Equal(12, result.Step);
        }

        using var first = Uio(baseModel, 12);
        using (var trainer = new Trainer(first, new InMemoryTrainingData(docs, shuffleSeed: 13), Unbiased, options, Folder("resumed")))
        {
            var stopped = trainer.Run(stopAfterStep: 5);
            Assert.False(stopped.Completed);
            Assert.Equal(5, stopped.Step);
            Assert.Equal(Checkpoint.FolderFor(Folder("resumed"), 5), stopped.Checkpoint);
        }

        // A model with other starting values and fresh data at position 0: everything must come from the checkpoint.
        using var second = Uio(baseModel, 99);
        using (var trainer = Trainer.Resume(Folder("resumed"), second, new InMemoryTrainingData(docs, shuffleSeed: 13), Unbiased))
        {
            Assert.Equal(5, trainer.Step);
            Assert.Equal(5, trainer.Optimizer.StepCount);
            var result = trainer.Run();
            Assert.True(result.Completed);
        }

        var expected = Values(straight);
        var actual = Values(second);
        var names = straight.TrainableParameters().Select(p => p.Name).ToArray();
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i].AsSpan().SequenceEqual(actual[i]), $"parameter {names[i]} differs after resuming");
        Assert.NotEqual(Values(Uio(baseModel, 12))[1], expected[1]);

        // The resumed run's log has each step once, with the same losses as the uninterrupted one.
        Assert.Equal(StepLosses(Folder("straight")), StepLosses(Folder("resumed")));

        // Resuming a completed run takes no step and leaves the log as it was.
        using var third = Uio(baseModel, 12);
        using (var trainer = Trainer.Resume(Folder("resumed"), third, new InMemoryTrainingData(docs), Unbiased))
        {
            var result = trainer.Run();
            Assert.True(result.Completed);
            Assert.Equal(12, result.Step);
        }
        Assert.Equal(actual, Values(third));
        Assert.Equal(StepLosses(Folder("straight")), StepLosses(Folder("resumed")));
    }

    /// <summary>(step, loss) of every step line in a run's metrics.jsonl.</summary>
    private static List<(int, double)> StepLosses(string runFolder) =>
        File.ReadAllLines(Path.Combine(runFolder, MetricsLog.JsonFileName))
            .Select(line => JsonDocument.Parse(line).RootElement)
            .Where(e => e.GetProperty("type").GetString() == "step")
            .Select(e => (e.GetProperty("step").GetInt32(), e.GetProperty("loss").GetDouble()))
            .ToList();

    // ------------------------------------------------------------------ checkpoints

    [Fact]
    public void ACheckpointWithAMissingOrTornManifestIsRejected()
    {
        var baseModel = Base(20);
        using var uio = Uio(baseModel, 20);
        var options = new TrainingOptions { TotalSteps = 4, CheckpointEvery = 2 };
        string run = Folder("manifest");
        using (var trainer = new Trainer(uio, new InMemoryTrainingData(Documents(21, 2, 2)), _ => new FullBptt(), options, run))
            trainer.Run();
        string step2 = Checkpoint.FolderFor(run, 2), step4 = Checkpoint.FolderFor(run, 4);
        Assert.Equal(2, Checkpoint.Verify(step2));
        Assert.Equal(4, Checkpoint.Verify(step4));
        Assert.Equal(step4, Checkpoint.Locate(run));

        // The newest checkpoint lost its manifest: asked for directly it is rejected; the run falls back to step 2.
        string manifest4 = Path.Combine(step4, Checkpoint.ManifestFileName);
        File.Delete(manifest4);
        var missing = Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(step4, uio, new InMemoryTrainingData(Documents(21, 2, 2)), _ => new FullBptt()));
        Assert.Contains("manifest.json is missing", missing.Message);
        Assert.Contains(step4, missing.Message);
        Assert.Equal(step2, Checkpoint.Locate(run));

        // A torn (half-written) manifest.
        string manifest2 = Path.Combine(step2, Checkpoint.ManifestFileName);
        string text = File.ReadAllText(manifest2);
        File.WriteAllText(manifest2, text[..(text.Length / 2)]);
        var torn = Assert.Throws<CheckpointFormatException>(() => Checkpoint.Verify(step2));
        Assert.Contains("not valid JSON", torn.Message);
        var none = Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(run, uio, new InMemoryTrainingData(Documents(21, 2, 2)), _ => new FullBptt()));
        Assert.Contains("no complete checkpoint", none.Message);

        // A manifest whose files no longer match.
        File.WriteAllText(manifest2, text);
        Checkpoint.Verify(step2);
        File.AppendAllText(Path.Combine(step2, Checkpoint.StateFileName), " ");
        Assert.Contains("bytes", Assert.Throws<CheckpointFormatException>(() => Checkpoint.Verify(step2)).Message);
    }

    [Fact]
    public void ResumeRejectsAModelWithOtherUioSettings()
    {
        var baseModel = Base(22);
        using var uio = Uio(baseModel, 22);
        string run = Folder("settings");
        using (var trainer = new Trainer(uio, new InMemoryTrainingData(Documents(23, 1, 2)), _ => new FullBptt(), new TrainingOptions { TotalSteps = 1 }, run))
            trainer.Run();
        using var other = new UioModel(baseModel, UioModelTests.Small(l: 8, n: 2));
        var e = Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(run, other, new InMemoryTrainingData(Documents(23, 1, 2)), _ => new FullBptt()));
        Assert.Contains("UIO settings", e.Message);
    }

    [Fact]
    public void KeepCheckpointsPrunesOldOnes()
    {
        var baseModel = Base(24);
        using var uio = Uio(baseModel, 24);
        string run = Folder("prune");
        var options = new TrainingOptions { TotalSteps = 5, CheckpointEvery = 1, KeepCheckpoints = 2 };
        var saved = new List<string>();
        using (var trainer = new Trainer(uio, new InMemoryTrainingData(Documents(25, 1, 1)), _ => new FullBptt(), options, run,
            new TrainerCallbacks { CheckpointSaved = saved.Add }))
            trainer.Run();
        Assert.Equal(5, saved.Count);
        Assert.Equal([4, 5], Checkpoint.List(run).Select(c => c.Step));
        Assert.DoesNotContain(Directory.GetDirectories(Path.Combine(run, Checkpoint.CheckpointsFolderName)), d => Path.GetFileName(d).StartsWith('.'));
    }

    // ------------------------------------------------------------------ logs and progress

    [Fact]
    public void MetricsAreValidJsonLinesAndCsvWithEvaluations()
    {
        var baseModel = Base(30);
        using var uio = Uio(baseModel, 30);
        string run = Folder("metrics");
        var reports = new List<TrainingProgress>();
        var options = new TrainingOptions { TotalSteps = 5, EvalEvery = 2 };
        var callbacks = new TrainerCallbacks
        {
            Progress = new SyncProgress(reports),
            Evaluate = (model, step) => new Dictionary<string, double> { ["val_loss"] = step * 0.5, ["nan_metric"] = double.NaN },
        };
        using (var trainer = new Trainer(uio, new InMemoryTrainingData(Documents(31, 2, 2)), _ => new FullBptt(), options, run, callbacks))
            trainer.Run();

        var lines = File.ReadAllLines(Path.Combine(run, MetricsLog.JsonFileName));
        var parsed = lines.Select(line => JsonDocument.Parse(line).RootElement).ToList();
        var steps = parsed.Where(e => e.GetProperty("type").GetString() == "step").ToList();
        var evals = parsed.Where(e => e.GetProperty("type").GetString() == "eval").ToList();
        Assert.Equal([1, 2, 3, 4, 5], steps.Select(e => e.GetProperty("step").GetInt32()));
        foreach (var e in steps)
        {
            Assert.True(e.GetProperty("loss").GetDouble() > 0);
            // The cosine reaches 0 at the last step.
            Assert.Equal(e.GetProperty("step").GetInt32() < 5, e.GetProperty("lr").GetDouble() > 0);
            Assert.True(e.GetProperty("grad_norm").GetDouble() > 0);
            Assert.Equal(2 * L, e.GetProperty("tokens").GetInt32());
        }
        // Every 2 steps, and once more when the run completes.
        Assert.Equal([2, 4, 5], evals.Select(e => e.GetProperty("step").GetInt32()));
        Assert.Equal(2.0, evals[1].GetProperty("metrics").GetProperty("val_loss").GetDouble());
        Assert.Equal(JsonValueKind.Null, evals[0].GetProperty("metrics").GetProperty("nan_metric").ValueKind);

        var csv = File.ReadAllLines(Path.Combine(run, MetricsLog.CsvFileName));
        Assert.StartsWith("step,loss,lr", csv[0]);
        Assert.Equal(6, csv.Length);
        Assert.Equal(10, csv[1].Split(',').Length);
        Assert.Equal(7, File.ReadAllLines(Path.Combine(run, MetricsLog.EvalCsvFileName)).Length);

        Assert.Equal([1, 2, 3, 4, 5], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(5, r.TotalSteps));
        Assert.Equal(TimeSpan.Zero, reports[^1].Eta);
        Assert.True(reports[0].TokensPerSecond > 0);
    }

    [Fact]
    public void ANewRunRefusesAFolderThatAlreadyHoldsARun()
    {
        var baseModel = Base(32);
        using var uio = Uio(baseModel, 32);
        string run = Folder("taken");
        var data = new InMemoryTrainingData(Documents(33, 1, 1));
        // A folder holding a checkpoint is a run to resume (one whose first save never completed starts over:
        // see Reliability/CheckpointReliabilityTests).
        using (var first = new Trainer(uio, data, _ => new FullBptt(), new TrainingOptions { TotalSteps = 1 }, run)) first.SaveCheckpoint();
        var e = Assert.Throws<IOException>(() => new Trainer(uio, data, _ => new FullBptt(), new TrainingOptions { TotalSteps = 1 }, run));
        Assert.Contains("metrics", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new Trainer(uio, data, _ => new FullBptt(), new TrainingOptions { TotalSteps = 0 }, Folder("zero")));
    }

    [Fact]
    public void TrainingDataReplaysFromASavedPosition()
    {
        var docs = Documents(40, 5, 1);
        var data = new InMemoryTrainingData(docs, shuffleSeed: 3);
        for (int i = 0; i < 7; i++) data.Next();
        var position = data.Position;
        Assert.Equal(new TrainingDataPosition(1, 2), position);
        var next = Enumerable.Range(0, 9).Select(_ => data.Next()).ToList();

        var again = new InMemoryTrainingData(docs, shuffleSeed: 3) { Position = position };
        Assert.Equal(next, Enumerable.Range(0, 9).Select(_ => again.Next()));

        // Each epoch visits every example once; the two epochs' orders differ for this seed.
        var fresh = new InMemoryTrainingData(docs, shuffleSeed: 3);
        int IndexOfNext()
        {
            var example = fresh.Next();
            return Array.FindIndex(docs, d => d.SequenceEqual(example));
        }
        var epoch0 = Enumerable.Range(0, 5).Select(_ => IndexOfNext()).ToArray();
        var epoch1 = Enumerable.Range(0, 5).Select(_ => IndexOfNext()).ToArray();
        Assert.Equal([0, 1, 2, 3, 4], epoch0.Order());
        Assert.Equal([0, 1, 2, 3, 4], epoch1.Order());
        Assert.NotEqual(epoch0, epoch1);
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Position = new TrainingDataPosition(0, 5));
    }

    /// <summary>Progress that records reports at once, on the calling thread (Progress&lt;T&gt; posts them asynchronously).</summary>
    private sealed class SyncProgress(List<TrainingProgress> sink) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => sink.Add(value);
    }
}
