using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods.Compression;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods.Icae;

/// <summary>Which losses ICAE trains: language modelling after the compressed context, auto-encoding of the context, or both (summed).</summary>
public enum IcaeObjective { Lm, Ae, Both }

/// <summary>ICAE settings (Ge et al. 2024; option names as in <c>icae:key=value</c>).</summary>
/// <param name="Chunk">Context tokens compressed into one set of slots.</param>
/// <param name="Slots">k: memory slots per chunk.</param>
/// <param name="Rank">Encoder LoRA rank (on q and v).</param>
/// <param name="Alpha">Encoder LoRA alpha.</param>
/// <param name="Objective">lm, ae or both.</param>
public sealed record IcaeConfig(int Chunk, int Slots, int Rank, float Alpha, IcaeObjective Objective)
{
    /// <summary>The option names, in the order they are listed.</summary>
    public static readonly string[] OptionNames = ["chunk", "slots", "rank", "alpha", "objective"];

    /// <summary>Defaults for a base of trained window <paramref name="window"/>: chunk min(512, window/2), slots chunk/4 (ICAE's 4x), rank 16, alpha 32, objective both.</summary>
    public static IcaeConfig Default(int window)
    {
        int chunk = Math.Max(1, Math.Min(512, window / 2));
        return new(chunk, Math.Max(1, chunk / 4), 16, 32f, IcaeObjective.Both);
    }

    /// <summary>Reads and checks the options (absent ones take <see cref="Default"/>'s values).</summary>
    /// <exception cref="MethodOptionException">A malformed or out-of-range option.</exception>
    public static IcaeConfig From(MethodOptions options, LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(baseConfig);
        var d = Default(baseConfig.MaxSeqLen);
        int chunk = options.Int("chunk", d.Chunk, 1, baseConfig.MaxSeqLen);
        int slots = options.Int("slots", Math.Max(1, chunk / 4), 1, baseConfig.MaxSeqLen);
        int rank = options.Int("rank", d.Rank, 1, 4096);
        float alpha = (float)options.Double("alpha", d.Alpha, 1e-6, 1e6);
        var objective = options.Choice("objective", "both", "lm", "ae", "both") switch
        {
            "lm" => IcaeObjective.Lm,
            "ae" => IcaeObjective.Ae,
            _ => IcaeObjective.Both,
        };
        var config = new IcaeConfig(chunk, slots, rank, alpha, objective);
        config.Validate(baseConfig, options.Method);
        return config;
    }

    /// <summary>Checks the settings against the base.</summary>
    /// <exception cref="MethodOptionException">A setting out of range (names the option).</exception>
    public void Validate(LlamaConfig baseConfig, string method = "icae")
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (Chunk < 1) throw new MethodOptionException($"method '{method}': option chunk must be at least 1, got {Chunk}");
        if (Slots < 1) throw new MethodOptionException($"method '{method}': option slots must be at least 1, got {Slots}");
        if (Chunk + Slots > baseConfig.MaxSeqLen)
            throw new MethodOptionException($"method '{method}': options chunk + slots = {Chunk + Slots} exceed the base's trained window {baseConfig.MaxSeqLen} (the encoder reads a chunk and its memory tokens at once)");
        if (Rank < 1) throw new MethodOptionException($"method '{method}': option rank must be at least 1, got {Rank}");
        if (!(Alpha > 0) || !float.IsFinite(Alpha)) throw new MethodOptionException($"method '{method}': option alpha must be a positive number, got {Alpha}");
        if (!Enum.IsDefined(Objective)) throw new MethodOptionException($"method '{method}': option objective must be lm, ae or both, got {Objective}");
    }

    /// <summary>The resolved options as text, formatted as <see cref="MethodOptions"/> records them.</summary>
    public IReadOnlyDictionary<string, string> ToOptions() => new SortedDictionary<string, string>(StringComparer.Ordinal)
    {
        ["chunk"] = Chunk.ToString(CultureInfo.InvariantCulture),
        ["slots"] = Slots.ToString(CultureInfo.InvariantCulture),
        ["rank"] = Rank.ToString(CultureInfo.InvariantCulture),
        ["alpha"] = ((double)Alpha).ToString("R", CultureInfo.InvariantCulture),
        ["objective"] = Objective.ToString().ToLowerInvariant(),
    };
}

/// <summary>
/// ICAE, the in-context autoencoder (gist-token family): the ENCODER is the base with LoRA on q and v reading
/// [embed(chunk) ; &lt;m_1&gt; .. &lt;m_k&gt;] (k learned memory-token embeddings); its last-layer outputs at the memory
/// positions, after the final norm (the last hidden state a Hugging Face model returns), are the chunk's k memory
/// slots. The DECODER is the frozen base without LoRA reading the slots as input embeddings, followed by either the
/// continuation (language modelling) or a learned [AE] embedding and the chunk itself (auto-encoding: it must
/// reconstruct the context). Long inputs: every chunk is compressed alone; a chunk is read after the slots of all
/// chunks before it.
/// </summary>
public sealed class IcaeModel : IDisposable
{
    /// <summary>Prefix of every parameter name (PEFT's layout for the LoRA factors).</summary>
    public const string NamePrefix = "base_model.model.model.";

    public const string MemoryEmbeddingName = NamePrefix + "icae.memory_embedding", AeEmbeddingName = NamePrefix + "icae.ae_embedding";

    public IcaeModel(LlamaModel baseModel, IcaeConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        Base = baseModel;
        Config = config;
        var rng = new Random(seed);
        Encoder = new AdaptedBlocks(baseModel, config.Rank, config.Alpha, ["q_proj", "v_proj"], rng, NamePrefix);
        // Memory tokens and [AE] start as embeddings of tokens drawn from the seed (distinct rows at the scale of real inputs).
        var c = baseModel.Config;
        float[] Rows(int n)
        {
            var init = new float[n * c.Dim];
            for (int s = 0; s < n; s++) baseModel.Weights.TokenEmbedding.Row(rng.Next(c.VocabSize)).ToArray().CopyTo(init, s * c.Dim);
            return init;
        }
        MemoryEmbedding = Var.Leaf(baseModel.Accelerator.FromArray(Rows(config.Slots), [config.Slots, c.Dim], MemoryEmbeddingName), requiresGrad: true);
        AeEmbedding = Var.Leaf(baseModel.Accelerator.FromArray(Rows(1), [1, c.Dim], AeEmbeddingName), requiresGrad: true);
    }

    public LlamaModel Base { get; }
    public IcaeConfig Config { get; }
    public Accelerator Accelerator => Base.Accelerator;

    /// <summary>The encoder: the base's blocks with LoRA on q and v.</summary>
    public AdaptedBlocks Encoder { get; }

    /// <summary>[k, dim]: the learned memory-token embeddings appended to a chunk in the encoder.</summary>
    public Var MemoryEmbedding { get; }

    /// <summary>[1, dim]: the learned [AE] embedding that tells the decoder to reconstruct.</summary>
    public Var AeEmbedding { get; }

    /// <summary>
    /// Diagnostic ablation (default false): the decoder reads zeros instead of the slots, so it sees nothing of the
    /// compressed context. Shows that the decoder reaches the context only through the slots.
    /// </summary>
    public bool ZeroSlots { get; set; }

    /// <summary>Every trainable leaf: memory embeddings, [AE], then the encoder LoRA layer by layer.</summary>
    public IEnumerable<Var> Parameters() => Encoder.Parameters().Prepend(AeEmbedding).Prepend(MemoryEmbedding);

    /// <summary>The k memory slots [k, dim] of one chunk (encoded alone, positions 0 .. n + k - 1).</summary>
    public Var Compress(Tape tape, ReadOnlySpan<int> chunk)
    {
        ArgumentNullException.ThrowIfNull(tape);
        var x = tape.ConcatRows(Base.Embed(tape, chunk), MemoryEmbedding);
        var last = Encoder.Forward(tape, x);
        return Base.FinalNorm.Forward(tape, tape.SliceRows(last, chunk.Length, Config.Slots));
    }

    /// <summary>
    /// The frozen decoder's final hidden states (after the final norm) over [slots ; lead ; embed(tokens)], for the
    /// rows after the slots (lead rows then token rows). <paramref name="lead"/>: the [AE] embedding for
    /// auto-encoding, null for language modelling.
    /// </summary>
    /// <param name="slots">Memory slots [S, dim] of the chunks read (oldest first), or null for none.</param>
    public Var DecoderHidden(Tape tape, Var? slots, Var? lead, ReadOnlySpan<int> tokens)
    {
        ArgumentNullException.ThrowIfNull(tape);
        var parts = new List<Var>(3);
        int prefix = 0;
        if (slots is not null)
        {
            if (slots.Value.Rank != 2 || slots.Value.Dim(1) != Base.Config.Dim)
                throw new ArgumentException($"IcaeModel: slots have shape {slots.Value.ShapeString}, expected [S, {Base.Config.Dim}]", nameof(slots));
            parts.Add(ZeroSlots ? tape.Scale(slots, 0f) : slots);
            prefix = slots.Value.Dim(0);
        }
        if (lead is not null) parts.Add(lead);
        if (!tokens.IsEmpty) parts.Add(Base.Embed(tape, tokens));
        var x = tape.ConcatRows(parts);
        var hidden = Base.Hidden(tape, x);
        return prefix == 0 ? hidden : tape.SliceRows(hidden, prefix, x.Value.Dim(0) - prefix);
    }

    /// <summary>Logits [T, vocab] of decoder hidden states (the base's head).</summary>
    public Var Logits(Tape tape, Var hidden) => Base.Head.Forward(tape, hidden);

    /// <summary>Mean cross-entropy of decoder hidden states against targets (-100 unscored).</summary>
    public Var Loss(Tape tape, Var hidden, ReadOnlySpan<int> targets) => Base.Head.CrossEntropy(tape, hidden, targets);

    /// <summary>
    /// The auto-encoding loss of one chunk given its slots: the decoder reads [slots ; [AE] ; chunk[0 .. n-2]] and
    /// row j must predict chunk[j] (the targets are the context tokens themselves).
    /// </summary>
    public Var ReconstructionLoss(Tape tape, Var slots, ReadOnlySpan<int> chunk)
    {
        ArgumentNullException.ThrowIfNull(slots);
        if (chunk.IsEmpty) throw new ArgumentException("IcaeModel.ReconstructionLoss: empty chunk", nameof(chunk));
        var hidden = DecoderHidden(tape, slots, AeEmbedding, chunk[..^1]);
        return Loss(tape, hidden, chunk);
    }

    public void Dispose()
    {
        foreach (var v in new[] { MemoryEmbedding, AeEmbedding })
        {
            v.DisposeLeaf();
            v.Value.Dispose();
        }
        Encoder.Dispose();
    }
}

/// <summary>
/// ICAE reading a stream of any length: every completed chunk is compressed alone into k slots; the open chunk is
/// read by the frozen decoder after the slots of all chunks so far (positions over [slots ; chunk]; beyond the base's
/// window <see cref="ILongContextSession.OutOfTrainedRange"/> is set).
/// </summary>
public sealed class IcaeSession(IcaeModel model) : CompressedSegmentSession(model.Config.Chunk, model.Base.Config.VocabSize)
{
    protected override LlamaConfig BaseConfig => model.Base.Config;

    protected override float[] SegmentLogits(ReadOnlySpan<int> tokens)
    {
        using var tape = new Tape(model.Accelerator, "icae.session");
        using var _ = tape.NoGrad();
        var hidden = model.DecoderHidden(tape, Prefix is null ? null : Var.Constant(Prefix), null, tokens);
        return model.Logits(tape, hidden).Value.ToArray();
    }

    protected override void CloseSegment(ReadOnlySpan<int> tokens)
    {
        using var tape = new Tape(model.Accelerator, "icae.session");
        using var _ = tape.NoGrad();
        var fresh = model.Compress(tape, tokens);
        AppendPrefix(model.Accelerator, fresh.Value, model.Config.Slots, "icae.slots");
    }
}
