using System.Globalization;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;

namespace UioLlm.Model.Methods;

/// <summary>
/// The settings of a Recurrent Memory Transformer: segment length l (ordinary tokens per segment), memory rows n,
/// and the rank and alpha of the LoRA on q and v. One segment reads [M ; l tokens ; M], so l + 2n must fit the
/// base's trained window.
/// </summary>
public sealed record RmtConfig(int SegmentLength, int MemoryTokens, int Rank, double Alpha)
{
    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that does not fit <paramref name="baseConfig"/>.</summary>
    public void Validate(LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(baseConfig);
        string Show(double x) => x.ToString("R", CultureInfo.InvariantCulture);
        if (SegmentLength < 1) throw new ArgumentException($"RMT: segment must be at least 1 token, got {SegmentLength}");
        if (MemoryTokens < 1) throw new ArgumentException($"RMT: memory must be at least 1 row, got {MemoryTokens}");
        if (Rank < 1) throw new ArgumentException($"RMT: rank must be at least 1, got {Rank}");
        if (!(Alpha > 0) || !double.IsFinite(Alpha)) throw new ArgumentException($"RMT: alpha must be positive, got {Show(Alpha)}");
        if (SegmentLength + 2 * MemoryTokens > baseConfig.MaxSeqLen)
            throw new ArgumentException($"RMT: segment {SegmentLength} + 2 x memory {MemoryTokens} = {SegmentLength + 2 * MemoryTokens} positions exceed the base's trained window of {baseConfig.MaxSeqLen}");
    }
}

/// <summary>What one RMT segment produced: the final-normed states of its ordinary tokens [T, dim] and, when it wrote, the next memory [n, dim].</summary>
public readonly record struct RmtSegment(Var Hidden, Var? Written);

/// <summary>
/// The Recurrent Memory Transformer (Bulatov et al. 2022) over a frozen base: every segment reads
/// [M ; segment ; M] causally at positions 0 .. n + T + n - 1, where the first n rows are the read memory and the
/// last n rows (the same M again) are write tokens; the new memory is the last block's output at the write rows
/// (before the final norm), fed to the next segment as input embeddings. The first memory is a learned
/// [n, dim] parameter (<see cref="Memory"/>), drawn N(0, std of the token embeddings); the base is adapted by LoRA on
/// q and v (<see cref="Lora"/>).
/// </summary>
public sealed class RmtModel : IDisposable
{
    /// <summary>The tensor name of the initial memory in an adapter.</summary>
    public const string MemoryName = "rmt.memory";

    public RmtModel(LlamaModel baseModel, RmtConfig config, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(baseModel.Config);
        Base = baseModel;
        Config = config;
        var c = baseModel.Config;
        var rng = new Random(seed);
        float std = EmbeddingStd(baseModel);
        var init = new float[config.MemoryTokens * c.Dim];
        for (int i = 0; i < init.Length; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            init[i] = std * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        Memory = Var.Leaf(baseModel.Accelerator.FromArray(init, [config.MemoryTokens, c.Dim], MemoryName), requiresGrad: true);
        Lora = new QvLora(baseModel, config.Rank, (float)config.Alpha, rng);
    }

    public LlamaModel Base { get; }
    public RmtConfig Config { get; }

    /// <summary>[n, dim]: the memory the first segment reads, trainable.</summary>
    public Var Memory { get; }

    /// <summary>LoRA on every layer's q and v.</summary>
    public QvLora Lora { get; }

    /// <summary>The initial memory, then every LoRA A and B, with their adapter names (always in this order).</summary>
    public IEnumerable<(string Name, Var Parameter)> NamedParameters() => Lora.NamedParameters().Prepend((MemoryName, Memory));

    /// <summary>
    /// One segment: reads <paramref name="memory"/> [n, dim] and 1..l tokens, returns the final-normed states of the
    /// tokens and, with <paramref name="write"/>, the new memory (gradients flow into it from whatever reads it).
    /// </summary>
    public RmtSegment Segment(Tape tape, Var memory, ReadOnlySpan<int> tokens, bool write)
    {
        ArgumentNullException.ThrowIfNull(tape);
        ArgumentNullException.ThrowIfNull(memory);
        int n = Config.MemoryTokens, t = tokens.Length;
        if (t < 1 || t > Config.SegmentLength)
            throw new ArgumentException($"RmtModel.Segment: {t} tokens; a segment holds 1 to {Config.SegmentLength}", nameof(tokens));
        if (memory.Value.Rank != 2 || memory.Value.Dim(0) != n || memory.Value.Dim(1) != Base.Config.Dim)
            throw new ArgumentException($"RmtModel.Segment: memory has shape {memory.Value.ShapeString}, expected [{n}, {Base.Config.Dim}]", nameof(memory));
        var embedded = Base.Embed(tape, tokens);
        var x = tape.ConcatRows(write ? [memory, embedded, memory] : [memory, embedded]);
        int rows = x.Value.Dim(0);
        var positions = new int[rows];
        for (int i = 0; i < rows; i++) positions[i] = i;
        for (int layer = 0; layer < Base.Config.Layers; layer++)
            x = Lora.Block(tape, layer, x, positions, null, Base.Config.DecoderMask(layer), out _);
        var hidden = Base.FinalNorm.Forward(tape, tape.SliceRows(x, n, t));
        return new RmtSegment(hidden, write ? tape.SliceRows(x, n + t, n) : null);
    }

    /// <summary>The standard deviation of (up to 256 evenly spaced rows of) the token embeddings: the scale of the initial memory.</summary>
    private static float EmbeddingStd(LlamaModel baseModel)
    {
        var table = baseModel.Weights.TokenEmbedding;
        int vocab = table.Dim(0), take = Math.Min(vocab, 256);
        double sum = 0, squares = 0;
        long count = 0;
        for (int i = 0; i < take; i++)
        {
            foreach (float value in table.Row((int)((long)i * vocab / take)).ToArray())
            {
                sum += value;
                squares += (double)value * value;
                count++;
            }
        }
        double mean = sum / count;
        double std = Math.Sqrt(Math.Max(0, squares / count - mean * mean));
        return std > 0 && double.IsFinite(std) ? (float)std : 0.02f;
    }

    public void Dispose()
    {
        Memory.DisposeLeaf();
        Memory.Value.Dispose();
        Lora.Dispose();
    }
}
