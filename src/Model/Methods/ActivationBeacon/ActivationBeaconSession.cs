using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods.ActivationBeacon;

/// <summary>
/// Activation Beacon at inference (<see cref="ActivationBeaconModel"/>): the raw tokens of the current window are
/// decoded incrementally in a KV cache whose prefix holds every kept beacon's K/V (rotated at positions 0 .. B-1);
/// when the window reaches W tokens it is re-run with its W/ratio beacons (the training forward), the beacons' K/V
/// are kept and the window's raw K/V dropped. Memory grows by W/ratio rows per window.
/// </summary>
public sealed class ActivationBeaconSession : ILongContextSession
{
    private readonly ActivationBeaconModel model;
    private readonly BeaconMemory memory;
    private readonly List<Tensor> owned = [];
    private readonly List<int> window = [];
    private readonly KvCache cache;
    private float[]? lastLogits;
    private long maxPosition;

    internal ActivationBeaconSession(ActivationBeaconModel model, int ratio)
    {
        this.model = model;
        model.BeaconsPerWindow(ratio);
        Ratio = ratio;
        var c = model.Base.Config;
        memory = new BeaconMemory(c.Layers);
        cache = model.Base.NewCache(model.Window + 16);
    }

    /// <summary>The compression ratio alpha (fixed for the session).</summary>
    public int Ratio { get; }

    /// <summary>Beacon rows kept per layer (W/ratio per compressed window).</summary>
    public int BeaconRows => memory.Rows;

    /// <summary>Raw tokens of the current, not yet compressed, window.</summary>
    public int WindowTokens => window.Count;

    public long TokensSeen { get; private set; }

    public long KvBytes => 2L * model.Base.Config.Layers * (memory.Rows + window.Count) * model.Base.Config.KvDim * sizeof(float);

    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>True once a query sat at a position past the base's trained context (beacons + window beyond it).</summary>
    public bool OutOfTrainedRange => maxPosition >= model.Base.Config.MaxSeqLen;

    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var result = new double[tokens.Length];
        Run(tokens, result);
        return result;
    }

    public void Prefill(ReadOnlySpan<int> tokens) => Run(tokens, null);

    private void Run(ReadOnlySpan<int> tokens, double[]? logProbs)
    {
        var c = model.Base.Config;
        int vocab = c.VocabSize;
        for (int done = 0; done < tokens.Length;)
        {
            if (window.Count == model.Window) Compress();
            int take = Math.Min(model.Window - window.Count, tokens.Length - done);
            var chunk = tokens.Slice(done, take);
            float[] rows;
            using (var tape = new Tape(model.Base.Accelerator, "beacon.session"))
            using (tape.NoGrad())
            {
                var hidden = model.Base.Hidden(tape, model.Base.Embed(tape, chunk), default, cache);
                if (logProbs is null) hidden = tape.SliceRows(hidden, take - 1, 1);
                rows = model.Base.Head.Forward(tape, hidden).Value.ToArray();
            }
            maxPosition = Math.Max(maxPosition, cache.Length - 1);
            if (logProbs is not null) LogProbs.OfChunk(lastLogits, rows, vocab, chunk, logProbs.AsSpan(done, take));
            lastLogits = rows.AsSpan(rows.Length - vocab, vocab).ToArray();
            foreach (int id in chunk) window.Add(id);
            TokensSeen += take;
            done += take;
        }
    }

    /// <summary>Turns the full window into beacons (the training forward), drops its raw K/V and rebuilds the cache prefix.</summary>
    private void Compress()
    {
        var c = model.Base.Config;
        var acc = model.Base.Accelerator;
        int before = memory.Rows;
        using (var tape = new Tape(acc, "beacon.compress"))
        using (tape.NoGrad())
        {
            var scratch = new BeaconMemory(c.Layers);
            for (int win = 0; win < memory.Windows; win++)
                scratch.Append([.. Enumerable.Range(0, c.Layers).Select(l => memory.KeysOf(l)[win])],
                    [.. Enumerable.Range(0, c.Layers).Select(l => memory.ValuesOf(l)[win])]);
            model.RunWindow(tape, [.. window], scratch, Ratio, compress: true);
            maxPosition = Math.Max(maxPosition, before + model.Window + model.BeaconsPerWindow(Ratio) - 1);
            // The new window's keys and values are the last entries of the scratch memory: copy them out of the tape.
            var keys = new Var[c.Layers];
            var values = new Var[c.Layers];
            for (int l = 0; l < c.Layers; l++)
            {
                keys[l] = Keep(scratch.KeysOf(l)[^1], $"beacon.session.{l}.k");
                values[l] = Keep(scratch.ValuesOf(l)[^1], $"beacon.session.{l}.v");
            }
            memory.Append(keys, values);
        }
        window.Clear();
        RebuildPrefix();
    }

    private Var Keep(Var value, string name)
    {
        var copy = model.Base.Accelerator.Allocate(value.Value.Shape, name);
        model.Base.Accelerator.Kernels.Copy(value.Value, copy);
        owned.Add(copy);
        return Var.Constant(copy);
    }

    /// <summary>The cache = the kept beacons' K (rotated at 0 .. B-1) and V as a prefix, no raw tokens.</summary>
    private void RebuildPrefix()
    {
        var c = model.Base.Config;
        int b = memory.Rows;
        cache.Clear();
        cache.EnsureCapacity(b + model.Window);
        var positions = new int[b];
        for (int i = 0; i < b; i++) positions[i] = i;
        var kernels = model.Base.Accelerator.Kernels;
        using var tape = new Tape(model.Base.Accelerator, "beacon.prefix");
        using var _ = tape.NoGrad();
        for (int l = 0; l < c.Layers; l++)
        {
            var k = tape.Reshape(ActivationBeaconModel.Concat(tape, memory.KeysOf(l)), b, c.KvHeads, c.HeadDim);
            var v = tape.Reshape(ActivationBeaconModel.Concat(tape, memory.ValuesOf(l)), b, c.KvHeads, c.HeadDim);
            kernels.Copy(tape.Rope(k, positions, model.Base.Rope).Value, cache.Keys(l).Slice(0, b));
            kernels.Copy(v.Value, cache.Values(l).Slice(0, b));
        }
        cache.ExtendPrefix(b);
    }

    public void Dispose()
    {
        cache.Dispose();
        foreach (var t in owned) t.Dispose();
        owned.Clear();
    }
}
