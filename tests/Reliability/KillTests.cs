using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Tests.Formats;
using UioLlm.Tests.Support;
using UioLlm.Training;

namespace UioLlm.Tests.Reliability;

/// <summary>
/// kill -9 of a `uio train` child process at random points of its first save and of later saves: every
/// checkpoint folder left under its own name is complete, a re-run never fails, and the run finishes with
/// an adapter byte-identical to an uninterrupted run's.
/// </summary>
public sealed class KillTests : IDisposable
{
    private readonly TempDir dir = new();

    public void Dispose() => dir.Dispose();

    private const int Steps = 12;

    [DataFact]
    public void KilledDuringFirstAndLaterSavesTheRunResumesWithNothingLost()
    {
        string uio = Path.Combine(AppContext.BaseDirectory, "uio.dll");
        Assert.True(File.Exists(uio), $"the CLI is not beside the tests: {uio}");
        // A tiny model for the 512-token vocabulary of tok512.bin: steps take milliseconds, saves dominate.
        string model = dir.File("tiny.bin");
        using (var acc = Accelerator.Create(AcceleratorKind.Cpu, 1))
        {
            using var weights = LlamaWeights.Allocate(acc, new LlamaConfig { Dim = 16, HiddenDim = 32, Layers = 1, Heads = 2, KvHeads = 2, VocabSize = 512, MaxSeqLen = 64 });
            var rng = new Rng(3);
            foreach (var (_, t) in weights.Named()) t.CopyFrom(rng.Normal(t.Length, 0.1f));
            Llama2cCheckpoint.Save(weights, model);
        }
        string text = dir.File("text.txt");
        File.WriteAllText(text, File.ReadAllText(TestData.File("text", "moby_dick_ch1.txt"))[..6000]);
        string[] Args(string run) =>
        [
            "train", "--model", model, "--tokenizer", TestData.File("models", "stories260K", "tok512.bin"), "--data", text, "--out", run,
            "--segment", "8", "--memory", "2", "--rank", "2", "--alpha", "4", "--segments", "2", "--steps", Steps.ToString(),
            "--checkpoint-every", "1", "--keep-checkpoints", "2", "--threads", "1",
        ];

        // Uninterrupted runs and re-runs go in-process (the same command line); only the killed ones are children.
        (int, string) InProcess(string[] args)
        {
            var error = new StringWriter();
            return (UioLlm.Cli.Program.Run(args, TextWriter.Null, error), error.ToString());
        }
        string reference = dir.File("reference");
        var (code, err) = InProcess(Args(reference));
        Assert.True(code == 0, err);
        var expected = Final(reference);

        var random = new Random(15);
        int kills = 0, firstSaveKills = 0;
        int shared = 0;
        string run = dir.File("killed-0");
        for (int round = 0; round < 40 && kills < 20; round++)
        {
            bool fresh = round % 2 == 0;
            string folder = fresh ? dir.File($"first-{round}") : run;
            // Fresh folders: kill within the first save (it follows the first step right after start-up);
            // the shared folder: kill anywhere in the run's later saves (each child resumes where the last was killed).
            int delay = fresh ? random.Next(0, 12) : random.Next(0, 40);
            var (exit, _) = RunChild([uio, .. Args(folder)], killAfterMs: delay);
            if (exit == 0 && !fresh)
            {
                // The shared run completed between kills: check it, and continue with a new one.
                AssertSameRun(expected, Final(run));
                run = dir.File($"killed-{++shared}");
                continue;
            }
            if (exit != 0) kills++;
            if (exit != 0 && fresh && !Checkpoint.HasCheckpoints(folder)) firstSaveKills++;
            // Whatever the moment of the kill, a folder under a checkpoint name is complete.
            foreach (var (_, checkpoint) in Checkpoint.List(folder)) Checkpoint.Verify(checkpoint);
            if (fresh)
            {
                // A re-run of a killed fresh folder starts (or resumes) and completes.
                (code, err) = InProcess(Args(folder));
                Assert.True(code == 0, err);
                AssertSameRun(expected, Final(folder));
                Directory.Delete(folder, recursive: true);
            }
        }
        (code, err) = InProcess(Args(run));
        Assert.True(code == 0, err);
        AssertSameRun(expected, Final(run));
        Assert.True(kills >= 20, $"only {kills} kills landed");
        Assert.True(firstSaveKills >= 1, "no kill landed before the first checkpoint was complete");
        Assert.DoesNotContain(Directory.GetDirectories(Path.Combine(run, Checkpoint.CheckpointsFolderName)), d => Path.GetFileName(d).StartsWith('.'));
    }

    /// <summary>The final checkpoint's step, data position and adapter tensors.</summary>
    private static (TrainerState State, Dictionary<string, float[]> Tensors) Final(string run)
    {
        string folder = Checkpoint.FolderFor(run, Steps);
        Checkpoint.Verify(folder);
        var file = SafetensorsFile.Read(Path.Combine(folder, Checkpoint.AdapterFolderName, "adapter_model.safetensors"));
        return (Checkpoint.ReadState(folder), file.Tensors.ToDictionary(t => t.Name, file.ReadTensor));
    }

    /// <summary>
    /// No step lost or repeated: the same step count and data position exactly, and the same adapter up to the last
    /// bits (a run resumed in another process may round a few values differently as the JIT tiers code up; one
    /// AdamW step more or less moves the weights by about the learning rate, 1e-4, far above this tolerance).
    /// </summary>
    private static void AssertSameRun((TrainerState State, Dictionary<string, float[]> Tensors) expected, (TrainerState State, Dictionary<string, float[]> Tensors) actual)
    {
        Assert.Equal(expected.State.Step, actual.State.Step);
        Assert.Equal(expected.State.DataPosition, actual.State.DataPosition);
        Assert.Equal(expected.State.TokensSeen, actual.State.TokensSeen);
        Assert.Equal(expected.Tensors.Keys.Order(), actual.Tensors.Keys.Order());
        foreach (var (name, values) in expected.Tensors)
        {
            var other = actual.Tensors[name];
            Assert.Equal(values.Length, other.Length);
            for (int i = 0; i < values.Length; i++)
                Assert.True(Math.Abs(values[i] - other[i]) <= 1e-6f + 1e-5f * Math.Abs(values[i]), $"{name}[{i}]: {values[i]} vs {other[i]}");
        }
    }

    /// <summary>Runs `dotnet uio.dll ...` and kills it (SIGKILL, whole tree) <paramref name="killAfterMs"/> ms after it reports its data.</summary>
    private static (int Code, string Error) RunChild(string[] args, int killAfterMs)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["DOTNET_TieredPGO"] = "0";
        using var child = Process.Start(info)!;
        var stderr = child.StandardError.ReadToEndAsync();
        // "uio train: N documents ..." comes right before training starts.
        string? line;
        while ((line = child.StandardOutput.ReadLine()) is not null && !line.Contains("documents", StringComparison.Ordinal)) { }
        if (line is not null)
        {
            Thread.Sleep(killAfterMs);
            try { child.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        }
        if (!child.WaitForExit(60_000))
        {
            child.Kill(entireProcessTree: true);
            throw new TimeoutException("the training child did not finish within 60 s");
        }
        return (child.ExitCode, stderr.Result);
    }
}
