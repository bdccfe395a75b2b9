using System.Globalization;
using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Methods.Compression;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods.AutoCompressor;

/// <summary>
/// AutoCompressor settings (Chevalier et al. 2023; option names as in <c>autocompressor:key=value</c>).
/// </summary>
/// <param name="Segment">Tokens per segment.</param>
/// <param name="Summary">kappa: summary tokens appended to each segment (and summary vectors it adds to the prefix).</param>
/// <param name="Rank">LoRA rank on q, k, v, o of every layer.</param>
/// <param name="Alpha">LoRA alpha (scale alpha / rank).</param>
/// <param name="Bptt">
/// Gradient depth across segments (truncated backpropagation): segment i's loss is differentiated through the passes
/// of segments i-Bptt .. i (the summaries they produce included); the summaries of older segments are constants
/// (stop-gradient). -1: no stop (full backpropagation through every summary).
/// </param>
public sealed record AutoCompressorConfig(int Segment, int Summary, int Rank, float Alpha, int Bptt)
{
    /// <summary>The option names, in the order they are listed.</summary>
    public static readonly string[] OptionNames = ["segment", "summary", "rank", "alpha", "bptt"];

    /// <summary>Defaults for a base of trained window <paramref name="window"/>: segment window/2, kappa min(50, max(1, window/16)), rank 16, alpha 32, bptt 1.</summary>
    public static AutoCompressorConfig Default(int window) => new(Math.Max(1, window / 2), Math.Min(50, Math.Max(1, window / 16)), 16, 32f, 1);

    /// <summary>Reads and checks the options (absent ones take <see cref="Default"/>'s values).</summary>
    /// <exception cref="MethodOptionException">A malformed or out-of-range option.</exception>
    public static AutoCompressorConfig From(MethodOptions options, LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(baseConfig);
        var d = Default(baseConfig.MaxSeqLen);
        int segment = options.Int("segment", d.Segment, 1, baseConfig.MaxSeqLen);
        int summary = options.Int("summary", Math.Min(d.Summary, Math.Max(1, baseConfig.MaxSeqLen - segment)), 1, baseConfig.MaxSeqLen);
        int rank = options.Int("rank", d.Rank, 1, 4096);
        float alpha = (float)options.Double("alpha", d.Alpha, 1e-6, 1e6);
        int bptt = options.Int("bptt", d.Bptt, -1);
        var config = new AutoCompressorConfig(segment, summary, rank, alpha, bptt);
        config.Validate(baseConfig, options.Method);
        return config;
    }

    /// <summary>Checks the settings against the base.</summary>
    /// <exception cref="MethodOptionException">A setting out of range (names the option).</exception>
    public void Validate(LlamaConfig baseConfig, string method = "autocompressor")
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (Segment < 1) throw new MethodOptionException($"method '{method}': option segment must be at least 1, got {Segment}");
        if (Summary < 1) throw new MethodOptionException($"method '{method}': option summary must be at least 1, got {Summary}");
        if (Segment + Summary > baseConfig.MaxSeqLen)
            throw new MethodOptionException($"method '{method}': options segment + summary = {Segment + Summary} exceed the base's trained window {baseConfig.MaxSeqLen} (one segment with its summary tokens must fit)");
        if (Rank < 1) throw new MethodOptionException($"method '{method}': option rank must be at least 1, got {Rank}");
        if (!(Alpha > 0) || !float.IsFinite(Alpha)) throw new MethodOptionException($"method '{method}': option alpha must be a positive number, got {Alpha}");
        if (Bptt == 0 || Bptt < -1) throw new MethodOptionException($"method '{method}': option bptt must be -1 (no stop-gradient) or at least 1, got {Bptt}");
    }

    /// <summary>The resolved options as text, formatted as <see cref="MethodOptions"/> records them.</summary>
    public IReadOnlyDictionary<string, string> ToOptions() => new SortedDictionary<string, string>(StringComparer.Ordinal)
    {
        ["segment"] = Segment.ToString(CultureInfo.InvariantCulture),
        ["summary"] = Summary.ToString(CultureInfo.InvariantCulture),
        ["rank"] = Rank.ToString(CultureInfo.InvariantCulture),
        ["alpha"] = ((double)Alpha).ToString("R", CultureInfo.InvariantCulture),
        ["bptt"] = Bptt.ToString(CultureInfo.InvariantCulture),
    };
}

/// <summary>
/// AutoCompressor over a frozen Llama-family base: kappa learned summary-token embeddings are appended to each
/// segment; the last block's outputs at those positions (before the final norm) are the segment's summary vectors.
/// Segment i reads, as input embeddings, [sigma_1 ; ... ; sigma_{i-1} ; embed(segment_i) ; &lt;sum&gt; x kappa]
/// (summary accumulation: every earlier segment's vectors, oldest first) at positions 0 .. P + n + kappa - 1, through
/// the base with LoRA on q, k, v, o. The token rows go through the final norm and the head for the language-model
/// loss; the summary rows only feed later segments.
/// </summary>
public sealed class AutoCompressorModel : IDisposable
{
    /// <summary>Prefix of every parameter name (PEFT's layout for the LoRA factors).</summary>
    public const string NamePrefix = "base_model.model.model.";

    /// <summary>The name of the summary-token embeddings [kappa, dim].</summary>
    public const string SummaryEmbeddingName = NamePrefix + "autocompressor.summary_embedding";

    public AutoCompressorModel(LlamaModel baseModel, AutoCompressorConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        Base = baseModel;
        Config = config;
        var rng = new Random(seed);
        Blocks = new AdaptedBlocks(baseModel, config.Rank, config.Alpha, AdaptedBlocks.AttentionProjections, rng, NamePrefix);
        // Each summary token starts as the embedding of a token drawn from the seed (distinct rows, the scale of
        // real inputs), as new-token embeddings are commonly initialised from the vocabulary.
        var c = baseModel.Config;
        var init = new float[config.Summary * c.Dim];
        for (int s = 0; s < config.Summary; s++)
            baseModel.Weights.TokenEmbedding.Row(rng.Next(c.VocabSize)).ToArray().CopyTo(init, s * c.Dim);
        SummaryEmbedding = Var.Leaf(baseModel.Accelerator.FromArray(init, [config.Summary, c.Dim], SummaryEmbeddingName), requiresGrad: true);
    }

    public LlamaModel Base { get; }
    public AutoCompressorConfig Config { get; }
    public Accelerator Accelerator => Base.Accelerator;

    /// <summary>The base's blocks with this method's LoRA on q, k, v, o.</summary>
    public AdaptedBlocks Blocks { get; }

    /// <summary>[kappa, dim]: the learned summary-token embeddings.</summary>
    public Var SummaryEmbedding { get; }

    /// <summary>
    /// Diagnostic ablation (default false): every summary vector a segment reads is replaced by zeros, so a segment
    /// sees nothing of the segments before it. Used to show that earlier segments reach later ones only through
    /// the summaries.
    /// </summary>
    public bool ZeroSummaries { get; set; }

    /// <summary>Every trainable leaf: the summary embeddings, then the LoRA factors layer by layer.</summary>
    public IEnumerable<Var> Parameters() => Blocks.Parameters().Prepend(SummaryEmbedding);

    /// <summary>
    /// One segment's pass: the last block's outputs (before the final norm) over
    /// [summaries ; embed(tokens) ; &lt;sum&gt; x kappa when <paramref name="withSummaryTokens"/>], positions from 0.
    /// Rows [P, P + n) are the tokens', rows [P + n, P + n + kappa) the new summary vectors.
    /// </summary>
    /// <param name="summaries">The accumulated summary vectors [P, dim] (oldest first), or null for the first segment.</param>
    public Var SegmentPass(Tape tape, Var? summaries, ReadOnlySpan<int> tokens, bool withSummaryTokens)
    {
        ArgumentNullException.ThrowIfNull(tape);
        var parts = new List<Var>(3);
        if (summaries is not null)
        {
            if (summaries.Value.Rank != 2 || summaries.Value.Dim(1) != Base.Config.Dim)
                throw new ArgumentException($"AutoCompressorModel: summaries have shape {summaries.Value.ShapeString}, expected [P, {Base.Config.Dim}]", nameof(summaries));
            parts.Add(ZeroSummaries ? tape.Scale(summaries, 0f) : summaries);
        }
        parts.Add(Base.Embed(tape, tokens));
        if (withSummaryTokens) parts.Add(SummaryEmbedding);
        return Blocks.Forward(tape, tape.ConcatRows(parts));
    }

    /// <summary>Logits [rows, vocab] of pass outputs (final norm, then the base's head).</summary>
    public Var Logits(Tape tape, Var passRows) => Base.Head.Forward(tape, Base.FinalNorm.Forward(tape, passRows));

    /// <summary>Mean cross-entropy of pass outputs against targets (-100 unscored): final norm, then the head.</summary>
    public Var Loss(Tape tape, Var passRows, ReadOnlySpan<int> targets) => Base.Head.CrossEntropy(tape, Base.FinalNorm.Forward(tape, passRows), targets);

    public void Dispose()
    {
        SummaryEmbedding.DisposeLeaf();
        SummaryEmbedding.Value.Dispose();
        Blocks.Dispose();
    }
}

/// <summary>
/// AutoCompressor reading a stream of any length: each completed segment adds its kappa summary vectors to the
/// prefix every later segment reads; the open segment is scored after the accumulated summaries. Positions run
/// over [summaries ; segment ; summary tokens], so the stream is inside the base's trained window while
/// (segments - 1) kappa + segment + kappa &lt;= window; beyond that <see cref="ILongContextSession.OutOfTrainedRange"/> is set.
/// </summary>
public sealed class AutoCompressorSession(AutoCompressorModel model) : CompressedSegmentSession(model.Config.Segment, model.Base.Config.VocabSize)
{
    protected override LlamaConfig BaseConfig => model.Base.Config;

    protected override int PassPositions(int tokens) => PrefixRows + tokens + model.Config.Summary;

    protected override float[] SegmentLogits(ReadOnlySpan<int> tokens)
    {
        using var tape = new Tape(model.Accelerator, "autocompressor.session");
        using var _ = tape.NoGrad();
        var pass = model.SegmentPass(tape, Prefix is null ? null : Var.Constant(Prefix), tokens, withSummaryTokens: false);
        return model.Logits(tape, tape.SliceRows(pass, PrefixRows, tokens.Length)).Value.ToArray();
    }

    protected override void CloseSegment(ReadOnlySpan<int> tokens)
    {
        using var tape = new Tape(model.Accelerator, "autocompressor.session");
        using var _ = tape.NoGrad();
        int p = PrefixRows, kappa = model.Config.Summary;
        var pass = model.SegmentPass(tape, Prefix is null ? null : Var.Constant(Prefix), tokens, withSummaryTokens: true);
        AppendPrefix(model.Accelerator, pass.Value.Slice(p + tokens.Length, kappa), kappa, "autocompressor.summaries");
    }
}
