using UioLlm.Kernels;
using UioLlm.Model.Autograd;

namespace UioLlm.Model.Modules;

/// <summary>
/// A Llama-family decoder over frozen <see cref="LlamaWeights"/>: token embedding, pre-norm blocks of
/// grouped-query attention and SwiGLU, a final norm, and a tied or separate output head. LoRA adapters can
/// be attached to any projection; they are the only trainable parameters.
/// </summary>
public sealed class LlamaModel
{
    private readonly LlamaBlock[] blocks;

    /// <param name="trainable">
    /// Make every weight a trainable leaf (full-weight training, e.g. pre-training a small base): gradients
    /// then land in the weights themselves; LoRA cannot be attached. Default: frozen weights, and the weights'
    /// tensors are frozen with them (<see cref="LlamaWeights.Freeze"/>): change them only after
    /// <see cref="LlamaWeights.Unfreeze"/>, which a trainable model does itself.
    /// </param>
    public LlamaModel(LlamaWeights weights, RopeTable? rope = null, bool trainable = false)
    {
        ArgumentNullException.ThrowIfNull(weights);
        Weights = weights;
        var c = weights.Config;
        Rope = rope ?? RopeTable.Create(c.HeadDim, c.RopeTheta, c.RopeScaling, RopeLayout.HalfSplit);
        if (Rope.HeadDim != c.HeadDim)
            throw new ArgumentException($"LlamaModel: RoPE table covers head_dim {Rope.HeadDim}, the model has {c.HeadDim}", nameof(rope));
        IsTrainable = trainable;
        if (trainable) weights.Unfreeze();
        else weights.Freeze();
        Embedding = trainable ? Var.Leaf(weights.TokenEmbedding, requiresGrad: true) : Var.Constant(weights.TokenEmbedding);
        blocks = new LlamaBlock[c.Layers];
        for (int l = 0; l < blocks.Length; l++) blocks[l] = new LlamaBlock(c, weights.Layers[l], Rope, l, trainable);
        FinalNorm = new RmsNorm(weights.FinalNorm, c.NormEps, trainable);
        // A tied head shares the embedding's value AND its gradient.
        Head = c.TiedEmbeddings ? new Linear(Embedding) : new Linear(weights.Output, trainable);
        // Quantised copies (GGUF with keepQuantized) serve tape-free decoding; a trainable model changes the
        // weights, so it never uses them.
        if (!trainable && weights.Quantized.Count > 0)
            foreach (var linear in blocks.SelectMany(b => b.Projections().Select(p => p.Linear)).Append(Head))
                if (weights.Quantized.TryGetValue(linear.Weight.Value.Name ?? "", out var q)) linear.Quantized = q;
    }

    public LlamaWeights Weights { get; }

    /// <summary>True when the weights themselves are trainable leaves (see the constructor).</summary>
    public bool IsTrainable { get; }

    /// <summary>Every weight as a tape value, each once (a tied head is the embedding): the parameters of full-weight training.</summary>
    public IEnumerable<Var> WeightParameters()
    {
        yield return Embedding;
        foreach (var block in blocks)
            foreach (var w in block.Weights()) yield return w;
        yield return FinalNorm.Weight;
        if (!Config.TiedEmbeddings) yield return Head.Weight;
    }
    public LlamaConfig Config => Weights.Config;
    public Accelerator Accelerator => Weights.Accelerator;
    public RopeTable Rope { get; }
    public Var Embedding { get; }
    public IReadOnlyList<LlamaBlock> Blocks => blocks;
    public RmsNorm FinalNorm { get; }
    public Linear Head { get; }

    /// <summary>A KV cache sized for this model (capacity defaults to its trained context).</summary>
    public KvCache NewCache(int capacity = 0) =>
        new(Accelerator, Config.Layers, capacity > 0 ? capacity : Config.MaxSeqLen, Config.KvHeads, Config.HeadDim);

    /// <summary>Token embeddings [T, dim].</summary>
    public Var Embed(Tape tape, ReadOnlySpan<int> ids)
    {
        CheckIds(ids);
        return tape.Embedding(Embedding, ids);
    }

    /// <summary>
    /// Runs every block over input states x [T, dim] and the final norm. Positions default to
    /// cache.Length + t (or t without a cache); with a cache the new tokens are appended to it.
    /// </summary>
    public Var Hidden(Tape tape, Var x, ReadOnlySpan<int> positions = default, KvCache? cache = null,
        Func<int, KvPrefix?>? prefixes = null)
    {
        int tokens = x.Value.Dim(0);
        int[]? defaultPositions = null;
        if (positions.IsEmpty)
        {
            defaultPositions = new int[tokens];
            int start = cache?.Length ?? 0;
            for (int t = 0; t < tokens; t++) defaultPositions[t] = start + t;
            positions = defaultPositions;
        }
        else if (positions.Length != tokens)
            throw new ArgumentException($"LlamaModel: {positions.Length} positions for {tokens} tokens", nameof(positions));
        cache?.EnsureRoom(tokens);
        for (int l = 0; l < blocks.Length; l++) x = blocks[l].Forward(tape, x, positions, cache, prefixes?.Invoke(l));
        cache?.Advance(tokens);
        return FinalNorm.Forward(tape, x);
    }

    /// <summary>Next-token logits [T, vocab] for the given token ids.</summary>
    public Var Forward(Tape tape, ReadOnlySpan<int> ids, KvCache? cache = null, ReadOnlySpan<int> positions = default) =>
        Head.Forward(tape, Hidden(tape, Embed(tape, ids), positions, cache));

    /// <summary>Logits [1, vocab] of the last token only (prefill and decode: skips the head for the others).</summary>
    public Var ForwardLast(Tape tape, ReadOnlySpan<int> ids, KvCache? cache = null, ReadOnlySpan<int> positions = default)
    {
        var hidden = Hidden(tape, Embed(tape, ids), positions, cache);
        return Head.Forward(tape, tape.SliceRows(hidden, ids.Length - 1, 1));
    }

    /// <summary>
    /// Tape-free inference: runs the tokens (in chunks of at most buffers.Rows) through the model, appending
    /// them to the cache, and returns the logits of the last one ([1, vocab], inside the buffers). The same
    /// math as <see cref="ForwardLast"/> without a graph; use it for generation and scoring.
    /// </summary>
    public Tensor Infer(ReadOnlySpan<int> ids, KvCache cache, InferenceBuffers buffers)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(buffers);
        CheckIds(ids);
        cache.EnsureRoom(ids.Length);
        if (buffers.Logits.Dim(1) != Config.VocabSize || buffers.X.Dim(1) != Config.Dim)
            throw new ArgumentException($"LlamaModel.Infer: buffers were made for another model shape (x {buffers.X.ShapeString}, logits {buffers.Logits.ShapeString})", nameof(buffers));
        var kernels = Accelerator.Kernels;
        Span<int> positions = stackalloc int[Math.Min(buffers.Rows, 256)];
        if (positions.Length < buffers.Rows) positions = new int[buffers.Rows];
        for (int done = 0; done < ids.Length;)
        {
            int n = Math.Min(buffers.Rows, ids.Length - done);
            kernels.Embedding(Embedding.Value, ids.Slice(done, n), buffers.X.Slice(0, n));
            for (int t = 0; t < n; t++) positions[t] = cache.Length + t;
            foreach (var block in blocks) block.Infer(kernels, buffers, n, positions[..n], cache);
            cache.Advance(n);
            done += n;
            if (done == ids.Length)
            {
                var last = buffers.Normed.Slice(0, 1);
                kernels.RmsNorm(buffers.X.Slice(n - 1, 1), FinalNorm.Weight.Value, last, buffers.Rstd.Slice(0, 1), FinalNorm.Eps);
                Head.Apply(kernels, last, buffers.Logits);
            }
        }
        return buffers.Logits;
    }

    /// <summary>Buffers for <see cref="Infer"/> sized for this model.</summary>
    public InferenceBuffers NewInferenceBuffers(int rows = 64) => new(Config, Accelerator, rows);

    /// <summary>Mean cross-entropy of predicting targets[t] from ids[0..t] (targets equal to -100 are ignored).</summary>
    public Var Loss(Tape tape, ReadOnlySpan<int> ids, ReadOnlySpan<int> targets)
    {
        if (targets.Length != ids.Length)
            throw new ArgumentException($"LlamaModel.Loss: {targets.Length} targets for {ids.Length} tokens", nameof(targets));
        return Head.CrossEntropy(tape, Hidden(tape, Embed(tape, ids), default, null), targets);
    }

    /// <summary>
    /// Attaches LoRA (rank r, alpha) to the named projections of every block ("q_proj", "k_proj", "v_proj",
    /// "o_proj", "gate_proj", "up_proj", "down_proj", or "all"); A is drawn from <paramref name="seed"/>.
    /// </summary>
    public IReadOnlyList<Lora> AttachLora(int rank, float alpha, int seed, params string[] targets)
    {
        ArgumentNullException.ThrowIfNull(targets);
        if (targets.Length == 0) throw new ArgumentException("AttachLora: name at least one projection (or \"all\")", nameof(targets));
        var known = blocks[0].Projections().Select(p => p.Name).ToHashSet();
        foreach (var t in targets)
            if (t != "all" && !known.Contains(t))
                throw new ArgumentException($"AttachLora: unknown projection '{t}'; expected one of {string.Join(", ", known)} or all", nameof(targets));
        bool all = targets.Contains("all");
        var rng = new Random(seed);
        var attached = new List<Lora>();
        foreach (var block in blocks)
            foreach (var (name, linear) in block.Projections())
                if (all || targets.Contains(name)) attached.Add(linear.AttachLora(rank, alpha, rng));
        return attached;
    }

    /// <summary>Removes every adapter.</summary>
    public void DetachLora()
    {
        foreach (var block in blocks)
            foreach (var (_, linear) in block.Projections()) linear.DetachLora();
    }

    /// <summary>The trainable parameters: every attached LoRA A and B, block by block.</summary>
    public IEnumerable<Var> TrainableParameters()
    {
        foreach (var block in blocks)
            foreach (var (_, linear) in block.Projections())
                if (linear.Adapter is { } lora)
                    foreach (var p in lora.Parameters()) yield return p;
    }

    private void CheckIds(ReadOnlySpan<int> ids)
    {
        if (ids.IsEmpty) throw new ArgumentException("LlamaModel: no token ids given", nameof(ids));
        int vocab = Config.VocabSize;
        foreach (int id in ids)
            if ((uint)id >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), $"LlamaModel: token id {id} is outside the vocabulary [0, {vocab})");
    }
}
