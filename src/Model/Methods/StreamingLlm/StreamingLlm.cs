using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;

// The namespace stays UioLlm.Model.Baselines while the built-in demo (issue 12) still imports it; the file lives with
// the other methods.
namespace UioLlm.Model.Baselines;

/// <summary>
/// StreamingLLM (Xiao et al., 2023) over a frozen model: the KV cache keeps the first <see cref="Sinks"/>
/// tokens (attention sinks) and a rolling window of the most recent tokens; keys are stored un-rotated and
/// RoPE positions are the indices within the cache, so positions never exceed the cache size however long
/// the stream. Inference only.
/// </summary>
/// <remarks>
/// A model with local layers (<see cref="LlamaConfig.LocalLayers"/>) keeps them local here: such a layer sees
/// the last LocalWindow tokens of the stream and never a sink farther away. Within the cache the rows after
/// the sinks are consecutive stream tokens, so a sliding window over cache indices is exact for them; the
/// sinks are at least as far in the stream as in the cache, and <see cref="ChunkLength"/> keeps every query
/// of a full cache more than LocalWindow rows past them, so no local layer sees a sink the stream puts
/// out of its reach.
/// </remarks>
public sealed class StreamingLlm : ILongContextSession
{
    private readonly LlamaModel model;
    private readonly Tensor[] keys;     // per layer, un-rotated [capacity, kv_heads, head_dim]
    private readonly Tensor[] values;
    private float[]? lastLogits;

    public StreamingLlm(LlamaModel model, int window, int sinks = 4)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (sinks < 0) throw new ArgumentOutOfRangeException(nameof(sinks), $"StreamingLlm: sinks must be >= 0, got {sinks}");
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), $"StreamingLlm: window must be >= 1, got {window}");
        var c = model.Config;
        if (c.LocalLayers > 0 && window < c.LocalWindow)
            throw new ArgumentOutOfRangeException(nameof(window),
                $"StreamingLlm: window {window} is shorter than the model's LocalWindow ({c.LocalWindow}) of its {c.LocalLayers} local layer(s); give a window of at least {c.LocalWindow}");
        this.model = model;
        Sinks = sinks;
        Window = window;
        // Queries of a full cache sit at rows >= Sinks + Window - chunk; a chunk of at most Window - LocalWindow + 1
        // keeps them >= LocalWindow rows past the last sink, so the local layers' window never reaches a sink.
        ChunkLength = c.LocalLayers > 0 ? window - c.LocalWindow + 1 : window;
        keys = new Tensor[c.Layers];
        values = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            keys[l] = model.Accelerator.Allocate([Capacity, c.KvHeads, c.HeadDim], $"streaming.{l}.k");
            values[l] = model.Accelerator.Allocate([Capacity, c.KvHeads, c.HeadDim], $"streaming.{l}.v");
        }
    }

    public int Sinks { get; }
    public int Window { get; }
    /// <summary>Most tokens one step runs: the window, less what local layers need (see the remarks).</summary>
    public int ChunkLength { get; }
    /// <summary>Most tokens the cache holds: sinks + window.</summary>
    public int Capacity => Sinks + Window;
    /// <summary>Tokens cached now.</summary>
    public int Length { get; private set; }
    public long TokensSeen { get; private set; }
    /// <summary>Logits [vocab] after the last token fed; empty before any.</summary>
    public ReadOnlySpan<float> LastLogits => lastLogits;

    /// <summary>Bytes of the cached keys and values (sinks and window, all layers).</summary>
    public long KvBytes => 2L * keys.Length * Length * model.Config.KvDim * sizeof(float);

    /// <summary>Only when the cache (sinks + window) is larger than the trained window and the stream has filled past it: positions are cache indices.</summary>
    public bool OutOfTrainedRange => Capacity > model.Config.MaxSeqLen && TokensSeen > model.Config.MaxSeqLen;

    /// <summary>Same as <see cref="Feed"/> (StreamingLLM has no cheaper path for a prompt).</summary>
    public void Prefill(ReadOnlySpan<int> tokens) => Feed(tokens);

    /// <summary>Feeds tokens (in chunks of at most <see cref="ChunkLength"/>) and returns each one's log-probability (NaN for the first ever).</summary>
    public double[] Feed(ReadOnlySpan<int> tokens)
    {
        var logProbs = new double[tokens.Length];
        for (int done = 0; done < tokens.Length;)
        {
            int take = Math.Min(ChunkLength, tokens.Length - done);
            var logits = Step(tokens.Slice(done, take));
            int vocab = model.Config.VocabSize;
            for (int t = 0; t < take; t++)
            {
                ReadOnlySpan<float> before = t == 0 ? lastLogits : logits.AsSpan((t - 1) * vocab, vocab);
                logProbs[done + t] = before.IsEmpty ? double.NaN : LogProbs.At(before, tokens[done + t]);
            }
            lastLogits = logits.AsSpan((take - 1) * vocab, vocab).ToArray();
            done += take;
        }
        return logProbs;
    }

    /// <summary>One chunk: make room (drop the oldest non-sink rows), then run every layer with cache-index positions.</summary>
    private float[] Step(ReadOnlySpan<int> chunk)
    {
        int tokens = chunk.Length;
        Evict(Length + tokens - Capacity);
        var c = model.Config;
        var kernels = model.Accelerator.Kernels;
        int total = Length + tokens;
        var queryPositions = new int[tokens];
        for (int t = 0; t < tokens; t++) queryPositions[t] = Length + t;
        var keyPositions = new int[total];
        for (int i = 0; i < total; i++) keyPositions[i] = i;

        using var tape = new Tape(model.Accelerator, "streaming");
        using var _ = tape.NoGrad();
        using var rotated = model.Accelerator.Scratch.Rent([total, c.KvHeads, c.HeadDim]);
        var x = model.Embed(tape, chunk);
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var block = model.Blocks[layer];
            var attention = block.Attention;
            var normed = block.AttentionNorm.Forward(tape, x);
            var q = tape.Rope(tape.Reshape(attention.Q.Forward(tape, normed), tokens, c.Heads, c.HeadDim), queryPositions, model.Rope);
            kernels.Copy(attention.K.Forward(tape, normed).Value, keys[layer].Slice(Length, tokens));
            kernels.Copy(attention.V.Forward(tape, normed).Value, values[layer].Slice(Length, tokens));
            // Every cached key is rotated at its current index in the cache.
            kernels.Rope(keys[layer].Slice(0, total), rotated, keyPositions, model.Rope);
            var o = tape.Attention(q, Var.Constant(rotated), Var.Constant(values[layer].Slice(0, total)), c.DecoderMask(layer));
            x = tape.Add(x, attention.O.Forward(tape, tape.Reshape(o, tokens, c.Heads * c.HeadDim)));
            x = tape.Add(x, block.Mlp.Forward(tape, block.FfnNorm.Forward(tape, x)));
        }
        Length = total;
        TokensSeen += tokens;
        return model.Head.Forward(tape, model.FinalNorm.Forward(tape, x)).Value.ToArray();
    }

    /// <summary>Drops the <paramref name="count"/> oldest rows after the sinks, moving the rest up.</summary>
    private void Evict(int count)
    {
        if (count <= 0) return;
        int keep = Length - Sinks - count;
        foreach (var buffers in new[] { keys, values })
            foreach (var t in buffers) TensorRows.Move(t, Sinks + count, Sinks, keep);
        Length = Sinks + Math.Max(keep, 0);
    }

    /// <summary>The cached un-rotated keys and values of a layer (rows [0, Length)); for tests.</summary>
    internal (Tensor Keys, Tensor Values) Cached(int layer) => (keys[layer].Slice(0, Length), values[layer].Slice(0, Length));

    public void Dispose()
    {
        foreach (var t in keys) t.Dispose();
        foreach (var t in values) t.Dispose();
    }
}
