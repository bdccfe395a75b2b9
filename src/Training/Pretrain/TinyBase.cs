using System.Security.Cryptography;
using System.Text.Json;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Formats;
using UioLlm.Model.Modules;
using UioLlm.Training.Optim;

namespace UioLlm.Training.Pretrain;

/// <summary>
/// A small Llama base pre-trained from random weights (every weight, AdamW, warmup + cosine, clipping at 1), and a
/// cache of it on disk: the weights as safetensors plus a manifest with the recipe's fingerprint and the file's
/// SHA-256, so a later run with the same recipe loads it and any other recipe (or a damaged file) pre-trains again.
/// The demo's base and the books comparison's base are both made this way.
/// </summary>
public static class TinyBase
{
    public const string WeightsFile = "model.safetensors", ManifestFile = "base.json";

    /// <summary>
    /// Pre-trains a fresh base of <paramref name="config"/> (initialised from <paramref name="seed"/>) on
    /// <paramref name="batch"/> windows a step from <paramref name="window"/> (window i of the run: its tokens and
    /// targets, -100 unscored). <paramref name="onStep"/> sees each step and a running mean of the loss. The caller owns the weights.
    /// </summary>
    public static LlamaWeights Pretrain(Accelerator accelerator, LlamaConfig config, int seed, int steps, int batch, float learningRate,
        Func<long, (int[] Tokens, int[] Targets)> window, Action<int, double>? onStep = null)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        ArgumentNullException.ThrowIfNull(window);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        var weights = LlamaWeights.Random(accelerator, config, seed, scale: 0.05f);
        try
        {
            var model = new LlamaModel(weights, trainable: true);
            var parameters = model.WeightParameters().ToList();
            var kernels = accelerator.Kernels;
            using var optimizer = new AdamW(parameters.Select(p => new AdamWParameter(p, Decay: p.Value.Rank == 2)).ToList(), new AdamWSettings(WeightDecay: 0.01f));
            var schedule = new WarmupCosineSchedule(learningRate, steps, Math.Max(1, steps / 20), learningRate / 10);
            double loss = 0;
            for (int step = 1; step <= steps; step++)
            {
                foreach (var p in parameters) p.ZeroGrad();
                double sum = 0;
                for (int b = 0; b < batch; b++)
                {
                    var (ids, targets) = window((long)(step - 1) * batch + b);
                    using var tape = new Tape(accelerator, "pretrain");
                    var l = model.Loss(tape, ids.AsSpan(0, ids.Length - 1), targets);
                    sum += l.Value.ToArray()[0];
                    tape.Backward(l);
                }
                var grads = parameters.Select(p => p.Grad!).ToArray();
                foreach (var g in grads) kernels.Scale(g, 1f / batch, g);
                GradientClipping.ClipGlobalNorm(kernels, grads, 1f);
                optimizer.Step(schedule.At(step));
                loss = step == 1 ? sum / batch : 0.98 * loss + 0.02 * sum / batch;
                onStep?.Invoke(step, loss);
            }
            foreach (var p in parameters) p.DisposeLeaf();
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The base cached in <paramref name="folder"/> when its manifest names <paramref name="fingerprint"/>, the weights
    /// file has the recorded SHA-256 and every tensor of <paramref name="config"/> is there with its size; otherwise
    /// <paramref name="create"/>'s weights, written there (to a temporary name, then renamed) with a new manifest.
    /// Returns the weights (the caller owns them), whether they came from the cache, and the file's SHA-256.
    /// </summary>
    public static (LlamaWeights Weights, bool FromCache, string Sha256) LoadOrCreate(Accelerator accelerator, LlamaConfig config, string folder, string fingerprint,
        Func<LlamaWeights> create)
    {
        ArgumentNullException.ThrowIfNull(create);
        string file = Path.Combine(folder, WeightsFile), manifest = Path.Combine(folder, ManifestFile);
        if (TryLoad(accelerator, config, file, manifest, fingerprint) is { } cached) return (cached.Weights, true, cached.Sha256);
        var weights = create();
        Directory.CreateDirectory(folder);
        string temp = file + ".tmp";
        SafetensorsWriter.Write(temp, weights.Named().Select(n => SafetensorsEntry.FromTensor(n.Name, n.Tensor)).ToList());
        File.Move(temp, file, overwrite: true);
        string sha = Sha256(file);
        string text = new System.Text.Json.Nodes.JsonObject { ["fingerprint"] = fingerprint, ["sha256"] = sha }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
        AtomicFile.WriteText(manifest, text + "\n");
        return (weights, false, sha);
    }

    private static (LlamaWeights Weights, string Sha256)? TryLoad(Accelerator accelerator, LlamaConfig config, string file, string manifest, string fingerprint)
    {
        if (!File.Exists(file) || !File.Exists(manifest)) return null;
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(manifest));
            if (json.RootElement.GetProperty("fingerprint").GetString() != fingerprint) return null;
            string sha = Sha256(file);
            if (json.RootElement.GetProperty("sha256").GetString() != sha) return null;
            var reader = SafetensorsFile.Read(file);
            var weights = LlamaWeights.Allocate(accelerator, config);
            foreach (var (name, tensor) in weights.Named())
            {
                var info = reader.Find(name);
                if (info is null || info.ElementCount != tensor.Length) { weights.Dispose(); return null; }
                tensor.CopyFrom(reader.ReadTensor(info));
            }
            return (weights, sha);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or ModelFormatException or IOException)
        {
            return null;   // a damaged cache is rebuilt, never trusted
        }
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
