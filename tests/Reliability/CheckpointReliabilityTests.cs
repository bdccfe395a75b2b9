using System.Diagnostics;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;
using UioLlm.Training;
using UioLlm.Training.Estimators;

namespace UioLlm.Tests.Reliability;

/// <summary>Interrupted saves, pruning, damaged trainer state, non-finite training, the memory budget, and kill -9 during saves.</summary>
public sealed class CheckpointReliabilityTests : IDisposable
{
    private const int L = 4, N = 2, Vocab = 37;
    private readonly TempDir dir = new();

    public void Dispose() => dir.Dispose();

    private static LlamaModel Base(int seed) => new(GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, seed));

    private static UioModel Uio(LlamaModel baseModel, int seed) => new(baseModel, UioModelTests.Small(l: L, n: N), seed);

    private static InMemoryTrainingData Data(int seed, int segments = 2)
    {
        var rng = new Rng(seed);
        return new InMemoryTrainingData(Enumerable.Range(0, 2).Select(_ => rng.Ints(segments * L + 1, 0, Vocab)).ToArray());
    }

    private static EstimatorFactory Full => _ => new FullBptt();

    [Fact]
    public void AnInterruptedFirstSaveNeverBlocksTheRun()
    {
        var baseModel = Base(1);
        using var uio = Uio(baseModel, 1);
        string run = Path.Combine(dir.Path, "run");
        // What a kill during the first save leaves: the metrics of step 1 and a temporary checkpoint folder.
        using (var trainer = new Trainer(uio, Data(2), Full, new TrainingOptions { TotalSteps = 3 }, run)) trainer.TrainStep();
        string temp = Path.Combine(run, Checkpoint.CheckpointsFolderName, $".step-00000001.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(Path.Combine(temp, "adapter"));
        File.WriteAllText(Path.Combine(temp, "adapter", "adapter_config.json"), "{");

        Assert.False(Checkpoint.HasCheckpoints(run));
        Assert.Throws<CheckpointFormatException>(() => Checkpoint.Locate(run));
        using (var trainer = new Trainer(uio, Data(2), Full, new TrainingOptions { TotalSteps = 3 }, run))
        {
            Assert.False(Directory.Exists(temp));   // cleaned on start
            trainer.Run();
        }
        var steps = File.ReadAllLines(Path.Combine(run, MetricsLog.JsonFileName)).Select(l => JsonNode.Parse(l)!["step"]!.GetValue<int>()).ToArray();
        Assert.Equal([1, 2, 3], steps);   // the interrupted session's lines were dropped
        Assert.Equal(3, Checkpoint.Verify(Checkpoint.Locate(run)));
    }

    [Fact]
    public void PruningRenamesBeforeDeletingAndResumeIgnoresLeftovers()
    {
        var baseModel = Base(3);
        using var uio = Uio(baseModel, 3);
        string run = Path.Combine(dir.Path, "prune");
        using (var trainer = new Trainer(uio, Data(4), Full, new TrainingOptions { TotalSteps = 6, CheckpointEvery = 1, KeepCheckpoints = 2 }, run))
            trainer.Run(stopAfterStep: 4);
        Assert.Equal([3, 4], Checkpoint.List(run).Select(c => c.Step));
        // A kill between the rename and the delete of a prune leaves a temporary folder, which is not a checkpoint.
        string leftover = Path.Combine(run, Checkpoint.CheckpointsFolderName, $".step-00000002.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(leftover);
        Assert.Equal([3, 4], Checkpoint.List(run).Select(c => c.Step));
        using (var trainer = Trainer.Resume(run, uio, Data(4), Full))
        {
            Assert.False(Directory.Exists(leftover));
            trainer.Run();
        }
        Assert.Equal([5, 6], Checkpoint.List(run).Select(c => c.Step));
    }

    private string SavedCheckpoint(int seed)
    {
        var baseModel = Base(seed);
        using var uio = Uio(baseModel, seed);
        string run = Path.Combine(dir.Path, $"state-{seed}");
        using var trainer = new Trainer(uio, Data(seed), Full, new TrainingOptions { TotalSteps = 2 }, run);
        return trainer.Run(stopAfterStep: 1).Checkpoint;
    }

    [Theory]
    [InlineData("options", "null", "'options' is null")]
    [InlineData("data_position", """{"epoch": 0, "index": 99}""", "data_position")]
    [InlineData("step", "\"one\"", "trainer state is unreadable")]
    public void ADamagedTrainerStateIsACheckpointErrorNamingTheFile(string field, string value, string expected)
    {
        string folder = SavedCheckpoint(5);
        string state = Path.Combine(folder, Checkpoint.StateFileName);
        var json = JsonNode.Parse(File.ReadAllText(state))!.AsObject();
        json[field] = JsonNode.Parse(value);
        File.WriteAllText(state, json.ToJsonString());
        var baseModel = Base(5);
        using var uio = Uio(baseModel, 5);
        // Re-sign the manifest so that the state itself is what gets checked.
        ResignManifest(folder);
        var e = Assert.Throws<CheckpointFormatException>(() => Trainer.Resume(folder, uio, Data(5), Full).Dispose());
        Assert.Contains(expected, e.Message);
        Assert.Contains(Checkpoint.StateFileName, e.Message);
    }

    // Found by the fuzzer: a manifest with invalid UTF-8 inside a string.
    [Fact]
    public void AManifestThatIsNotUtf8IsACheckpointError()
    {
        string folder = SavedCheckpoint(10);
        string manifest = Path.Combine(folder, Checkpoint.ManifestFileName);
        byte[] bytes = File.ReadAllBytes(manifest);
        int at = Array.IndexOf(bytes, (byte)'u');   // inside "uiollm-checkpoint"
        bytes[at] = 0xFF;
        File.WriteAllBytes(manifest, bytes);
        var e = Assert.Throws<CheckpointFormatException>(() => Checkpoint.Verify(folder));
        Assert.Contains("UTF-8", e.Message);
        Assert.Contains(manifest, e.Message);
    }

    internal static void ResignManifest(string folder)
    {
        string path = Path.Combine(folder, Checkpoint.ManifestFileName);
        var manifest = JsonNode.Parse(File.ReadAllText(path))!;
        foreach (var entry in manifest["files"]!.AsArray())
        {
            byte[] bytes = File.ReadAllBytes(Path.Combine(folder, entry!["path"]!.GetValue<string>()));
            entry["bytes"] = bytes.Length;
            entry["sha256"] = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
        }
        File.WriteAllText(path, manifest.ToJsonString());
    }

    [Fact]
    public void NonFiniteTrainingNamesTheStepAndBlamesTheBaseWeightsOrTheUpdate()
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, 6);
        weights.Layers[0].Wv.Span[1] = float.NaN;
        var baseModel = new LlamaModel(weights);
        using (var uio = Uio(baseModel, 6))
        using (var trainer = new Trainer(uio, Data(6), Full, new TrainingOptions { TotalSteps = 2 }, Path.Combine(dir.Path, "nan-base")))
        {
            var e = Assert.Throws<NonFiniteException>(() => trainer.TrainStep());
            Assert.Contains("step 1", e.Message);
            Assert.Contains("base model's weights", e.Message);
            Assert.Contains("v_proj", e.Message);
        }

        var healthy = Base(7);
        using (var uio = Uio(healthy, 7))
        using (var trainer = new Trainer(uio, Data(7), Full,
                   new TrainingOptions { TotalSteps = 2, PeakLearningRate = 1e38f, WarmupSteps = 0, MaxGradNorm = float.PositiveInfinity }, Path.Combine(dir.Path, "nan-update")))
        {
            UioModelTests.Randomise(uio, 8, std: 0.3f);
            var e = Assert.Throws<NonFiniteException>(() => { trainer.TrainStep(); trainer.TrainStep(); });
            Assert.Matches("step [12]", e.Message);
            Assert.Contains("learning rate", e.Message);
            Assert.DoesNotContain("base model's weights", e.Message);
        }
    }

    [Fact]
    public void TheMemoryBudgetRefusesAnAllocationBeforeMakingIt()
    {
        using var acc = Accelerator.Create(AcceleratorKind.Cpu, 1);
        acc.Memory.LimitBytes = 1 << 20;
        using (var a = acc.Allocate(128, 1024)) // 512 KB
        {
            Assert.Equal(512 * 1024, acc.Memory.InUseBytes);
            var e = Assert.Throws<MemoryBudgetExceededException>(() => acc.Allocate(256, 1024));
            Assert.Equal(512 * 1024, acc.Memory.InUseBytes);   // nothing was taken for the refused request
            Assert.Contains("1 MB", e.Message);
            using var reserved = acc.Memory.Reserve(256 * 1024, "the token cache");
            Assert.Throws<MemoryBudgetExceededException>(() => acc.Memory.Reserve(512 * 1024, "more"));
        }
        Assert.Equal(0, acc.Memory.InUseBytes);
    }

    [Fact]
    public void TrainingUnderATightBudgetStopsWithAClearErrorAndAWideOneRuns()
    {
        // A private accelerator: the budget must not limit tests running beside this one.
        using var acc = Accelerator.Create(AcceleratorKind.Cpu, 1);
        var weights = LlamaWeights.Allocate(acc, GradCheck.TinyConfig() with { MaxSeqLen = 512 });
        var rng = new Rng(9);
        foreach (var (_, t) in weights.Named()) t.CopyFrom(rng.Normal(t.Length, 0.2f));
        var baseModel = new LlamaModel(weights);
        using var uio = Uio(baseModel, 9);
        var budget = acc.Memory;
        long limit = budget.LimitBytes;
        try
        {
            budget.LimitBytes = budget.InUseBytes + 4096;   // the optimizer moments alone need more
            Assert.Throws<MemoryBudgetExceededException>(() =>
            {
                using var trainer = new Trainer(uio, Data(9, segments: 4), _ => new FullBptt(), new TrainingOptions { TotalSteps = 1 }, Path.Combine(dir.Path, "tight"));
                trainer.TrainStep();
            });
            budget.LimitBytes = budget.InUseBytes + (64L << 20);
            using var ok = new Trainer(uio, Data(9, segments: 4), _ => new FullBptt(), new TrainingOptions { TotalSteps = 1 }, Path.Combine(dir.Path, "wide"));
            ok.TrainStep();
        }
        finally
        {
            budget.LimitBytes = limit;
        }
    }
}
