using System.Text.Json;
using UioLlm.Cli;
using UioLlm.Model.Formats;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Distributed;

/// <summary>Data-parallel training and ring attention under `mpirun -np 2` (tiny shapes and the stories260K model).</summary>
public sealed class MpiTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("uio-mpi-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [MpiFact]
    public void RingAttentionAndTheGradientReductionMatchASingleProcess()
    {
        string json = Path.Combine(root, "check.json");
        var (code, output) = MpiRun.Uio(2, "mpi", "check", "--json", json);
        Assert.True(code == 0, output);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        Assert.Equal(2, doc.RootElement.GetProperty("ranks").GetInt32());
        Assert.True(doc.RootElement.GetProperty("ok").GetBoolean(), output);
        Assert.True(doc.RootElement.GetProperty("allreduce_exact").GetBoolean(), output);
        var ring = doc.RootElement.GetProperty("ring_attention").EnumerateArray().ToList();
        Assert.Equal(3, ring.Count);
        foreach (var c in ring) Assert.True(c.GetProperty("max_error").GetDouble() < 2e-5, output);
    }

    [MpiDataFact]
    public void DeterministicDataParallelTrainingIsBitIdenticalToOneProcess()
    {
        string one = Path.Combine(root, "one"), two = Path.Combine(root, "two");
        var (code, error) = InProcess(Train(one, "--deterministic-reduce"));
        Assert.True(code == 0, error);
        var (mpiCode, output) = MpiRun.Uio(2, Train(two, "--deterministic-reduce"));
        Assert.True(mpiCode == 0, output);
        Assert.Contains("2 rank(s)", output);
        string a = Final(one), b = Final(two);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "adapter", "adapter_model.safetensors")), File.ReadAllBytes(Path.Combine(b, "adapter", "adapter_model.safetensors")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "optimizer.safetensors")), File.ReadAllBytes(Path.Combine(b, "optimizer.safetensors")));
        Assert.Equal(Losses(one), Losses(two));
        // Only rank 0 wrote the run folder: one metrics row per step.
        Assert.Equal(3, Losses(two).Length);
    }

    [MpiDataFact]
    public void FastDataParallelTrainingMatchesOneProcessUpToSummationOrder()
    {
        string one = Path.Combine(root, "one"), two = Path.Combine(root, "two");
        var (code, error) = InProcess(Train(one));
        Assert.True(code == 0, error);
        var (mpiCode, output) = MpiRun.Uio(2, Train(two));
        Assert.True(mpiCode == 0, output);
        var expected = Floats(Path.Combine(Final(one), "adapter", "adapter_model.safetensors"));
        var actual = Floats(Path.Combine(Final(two), "adapter", "adapter_model.safetensors"));
        Assert.Equal(expected.Length, actual.Length);
        double maxDiff = 0, maxValue = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(expected[i] - actual[i]));
            maxValue = Math.Max(maxValue, Math.Abs(expected[i]));
        }
        // Three AdamW steps of lr 1e-4 move each parameter by about 3e-4; reordered sums change it by far less.
        Assert.True(maxDiff < 1e-6 * Math.Max(1, maxValue), $"max |difference| {maxDiff} (largest parameter {maxValue})");
        var (l1, l2) = (Losses(one), Losses(two));
        for (int s = 0; s < l1.Length; s++) Assert.Equal(l1[s], l2[s], 1e-5);
    }

    [MpiDataFact]
    public void EveryRankResumesACheckpointEvenOneWrittenByAnotherNumberOfRanks()
    {
        // An uninterrupted 4-step run in one process, and 2 ranks restarted from its step-2 checkpoint:
        // bit-identical at step 4 (deterministic mode does not depend on the number of ranks).
        string whole = Path.Combine(root, "whole"), resumed = Path.Combine(root, "resumed");
        var (code, error) = InProcess(Train(whole, "--deterministic-reduce", "--steps", "4", "--checkpoint-every", "2"));
        Assert.True(code == 0, error);
        string step2 = Path.Combine(whole, "checkpoints", "step-00000002");
        Assert.True(Directory.Exists(step2));
        CopyFolder(step2, Path.Combine(resumed, "checkpoints", "step-00000002"));
        foreach (var f in Directory.GetFiles(whole, "metrics.*")) File.Copy(f, Path.Combine(resumed, Path.GetFileName(f)));
        var (mpiCode, output) = MpiRun.Uio(2, Train(resumed, "--deterministic-reduce", "--steps", "4", "--checkpoint-every", "2"));
        Assert.True(mpiCode == 0, output);
        Assert.Contains("resumed", output);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Final(whole), "adapter", "adapter_model.safetensors")),
            File.ReadAllBytes(Path.Combine(Final(resumed), "adapter", "adapter_model.safetensors")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Final(whole), "optimizer.safetensors")),
            File.ReadAllBytes(Path.Combine(Final(resumed), "optimizer.safetensors")));
        Assert.Equal(Losses(whole), Losses(resumed));
    }

    [MpiDataFact]
    public void SequenceParallelPerplexityOverTwoRanksEqualsOneProcess()
    {
        string Stories(string f) => TestData.File("models", "stories260K", f);
        string[] Args(string json) =>
        [
            "mpi", "perplexity", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
            "--data", TestData.File("text", "moby_dick_ch1.txt"), "--tokens", "256", "--threads", "1", "--json", json,
        ];
        string one = Path.Combine(root, "one.json"), two = Path.Combine(root, "two.json");
        var (code, error) = InProcess(Args(one));
        Assert.True(code == 0, error);
        var (mpiCode, output) = MpiRun.Uio(2, Args(two));
        Assert.True(mpiCode == 0, output);
        double Perplexity(string json)
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            return doc.RootElement.GetProperty("perplexity").GetDouble();
        }
        double a = Perplexity(one), b = Perplexity(two);
        Assert.InRange(a, 2, 512);   // a trained model on English text: far below the vocabulary size
        Assert.True(Math.Abs(a - b) <= 1e-5 * a, $"1 process {a}, 2 ranks {b}");
        (mpiCode, output) = MpiRun.Uio(2, Args(two).Select(a => a == "256" ? "255" : a).ToArray());
        Assert.Equal(2, mpiCode);
        Assert.Contains("--tokens must be a multiple of the 2 rank(s)", output);
    }

    [MpiDataFact]
    public void TooFewDocumentsPerStepForTheRanksIsAClearErrorOnEveryRank()
    {
        var (code, output) = MpiRun.Uio(2, Train(Path.Combine(root, "run"), "--accumulate", "1"));
        Assert.Equal(2, code);
        Assert.Contains("--accumulate 1", output);
        Assert.Contains("at least 2 documents", output);
    }

    private static string[] Train(string folder, params string[] extra)
    {
        string Stories(string f) => TestData.File("models", "stories260K", f);
        string[] args =
        [
            "train", "--model", Stories("stories260K.bin"), "--tokenizer", Stories("tok512.bin"),
            "--data", TestData.File("text", "moby_dick_ch1.txt"), "--out", folder, "--segment", "16", "--memory", "2", "--rank", "4",
            "--segments", "3", "--accumulate", "2", "--threads", "1", "--steps", "3", "--checkpoint-every", "0",
        ];
        // An option given in extra replaces the default above (a flag is simply added).
        var list = args.ToList();
        for (int i = 0; i < extra.Length; i++)
        {
            bool hasValue = i + 1 < extra.Length && !extra[i + 1].StartsWith("--", StringComparison.Ordinal);
            int at = list.IndexOf(extra[i]);
            if (at >= 0 && hasValue) list[at + 1] = extra[++i];
            else if (hasValue) list.AddRange([extra[i], extra[++i]]);
            else list.Add(extra[i]);
        }
        return [.. list];
    }

    private static (int Code, string Error) InProcess(string[] args)
    {
        var error = new StringWriter();
        int code = Program.Run(args, TextWriter.Null, error);
        return (code, error.ToString());
    }

    /// <summary>The newest checkpoint folder of a run.</summary>
    private static string Final(string run) =>
        Directory.GetDirectories(Path.Combine(run, "checkpoints")).OrderBy(d => d, StringComparer.Ordinal).Last();

    /// <summary>The loss column of the run's metrics.csv, as written.</summary>
    private static double[] Losses(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1).Where(l => l.Length > 0)
            .Select(l => double.Parse(l.Split(',')[1], System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    private static float[] Floats(string path)
    {
        var file = SafetensorsFile.Read(path);
        var bytes = File.ReadAllBytes(path);
        var all = new List<float>();
        foreach (var t in file.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            Assert.Equal(SafetensorsDType.F32, t.DType);
            var span = bytes.AsSpan((int)(file.DataOffset + t.Begin), (int)t.ByteLength);
            all.AddRange(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(span).ToArray());
        }
        return [.. all];
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.GetDirectories(from)) CopyFolder(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
