namespace UioLlm.Training.Demo;

/// <summary>
/// Every size and step count of the built-in demo (<see cref="DemoRunner"/>). <see cref="Default"/> is the
/// full run (a few minutes on two cores); <see cref="Quick"/> shrinks everything for tests.
/// </summary>
public sealed record DemoSettings
{
    /// <summary>Seeds the base weights, the data, the adapters and the estimators: one seed, one result.</summary>
    public int Seed { get; init; }

    /// <summary>CPU threads for the kernels (0: all cores).</summary>
    public int Threads { get; init; }

    // ---- the base model
    /// <summary>The base model's context (its window); also the UIO segment length l.</summary>
    public int Window { get; init; } = 64;
    public int Dim { get; init; } = 64;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int HiddenDim { get; init; } = 192;
    /// <summary>
    /// The first LocalLayers layers of the base attend only to the last <see cref="LocalWindow"/> tokens
    /// (<see cref="Model.LlamaConfig.LocalLayers"/>). With layer 0 local the base cannot copy the key in layer
    /// 0 (the key is farther than the local window from the question) and must copy it in a global layer,
    /// whose UIO memory states carry content; a global layer 0 copies there, and UIO's layer-0 memory is only
    /// the normalised &lt;mem&gt; embedding (docs/ARCHITECTURE.md, "The built-in demo"). 0: every layer global.
    /// Off by default: measured, a local layer 0 (window 4, 8 or 16) did move the copy into layer 1, but the
    /// base then copied only 1-26 % of in-window keys after 3,000 steps (69 % with global layers) and UIO
    /// still stayed at chance (ARCHITECTURE.md). <see cref="Quick"/> turns it on so tests run the local path.
    /// </summary>
    public int LocalLayers { get; init; }
    /// <summary>The local layers' window in tokens (used when <see cref="LocalLayers"/> &gt; 0).</summary>
    public int LocalWindow { get; init; } = 16;
    /// <summary>Digits of a passkey; three digits are one token (one of 900 keys).</summary>
    public int KeyDigits { get; init; } = 3;
    /// <summary>
    /// Filler sentences carry random numbers too, meant to make the key "the number after '#'" (an induction
    /// head across layers 0 and 1) rather than "the only number" (layer 0 alone). Off: measured, it did not move
    /// the copy out of layer 0 (docs/ARCHITECTURE.md, "The built-in demo").
    /// </summary>
    public double DistractorShare { get; init; }
    /// <summary>Optimizer steps of pre-training, each over <see cref="PretrainBatch"/> windows.</summary>
    public int PretrainSteps { get; init; } = 3000;
    public int PretrainBatch { get; init; } = 8;
    public float PretrainLearningRate { get; init; } = 3e-3f;

    // ---- the UIO memory
    /// <summary>
    /// UIO's segment length l, at most the window. The decoder reads [memory ; local tokens] with RoPE counted
    /// from 0, so memory plus local window must fit the distances the base was trained on (UIO.md: context
    /// up to l + l (W - l) / n); with l = W every memory row is farther than the base ever looked.
    /// </summary>
    public int SegmentLength { get; init; } = 32;
    /// <summary>Memory tokens n per segment of <see cref="SegmentLength"/> tokens.</summary>
    public int MemoryTokens { get; init; } = 2;
    public int Rank { get; init; } = 16;
    public float Alpha { get; init; } = 32;
    /// <summary>Truncation window and reservoir size S.</summary>
    public int EstimatorWindow { get; init; } = 2;
    public int UioSteps { get; init; } = 2000;
    public int UioDocumentsPerStep { get; init; } = 1;
    public float UioLearningRate { get; init; } = 5e-3f;
    /// <summary>UIO training scores only the answer (true) or every next token (false).</summary>
    public bool UioAnswerOnly { get; init; } = true;
    /// <summary>Training documents are this many segments long (drawn uniformly per document).</summary>
    public int MinSegments { get; init; } = 4;
    public int MaxSegments { get; init; } = 8;

    // ---- the evaluation
    /// <summary>Context lengths in windows.</summary>
    public int[] EvalWindows { get; init; } = [1, 2, 4, 8, 12, 16];
    /// <summary>Needle depths (fraction of the filler before the needle).</summary>
    public double[] Depths { get; init; } = [0.0, 0.25, 0.5, 0.75, 0.95];
    /// <summary>Keys per (length, depth).</summary>
    public int Trials { get; init; } = 2;
    public int StreamingSinks { get; init; } = 4;

    public static DemoSettings Default => new();

    /// <summary>Tiny everything: runs in seconds; its numbers mean nothing.</summary>
    public static DemoSettings Quick => new()
    {
        Window = 48, Dim = 32, Layers = 2, Heads = 2, HiddenDim = 64, KeyDigits = 3, LocalLayers = 1, LocalWindow = 4,
        PretrainSteps = 6, PretrainBatch = 2, SegmentLength = 24, MemoryTokens = 4, Rank = 4, Alpha = 8,
        UioSteps = 3, MinSegments = 4, MaxSegments = 4, EvalWindows = [1, 2, 4], Depths = [0.0, 0.5], Trials = 1,
    };

    /// <summary>Throws ArgumentException naming the first setting that cannot work.</summary>
    public void Validate()
    {
        void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"demo: {name} must be positive");
        }
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), Threads, "demo: threads must be 0 (all cores) or positive");
        foreach (var (v, n) in new[] { (Window, nameof(Window)), (Dim, nameof(Dim)), (Layers, nameof(Layers)), (Heads, nameof(Heads)), (HiddenDim, nameof(HiddenDim)),
                     (PretrainSteps, nameof(PretrainSteps)), (PretrainBatch, nameof(PretrainBatch)), (MemoryTokens, nameof(MemoryTokens)), (Rank, nameof(Rank)),
                     (EstimatorWindow, nameof(EstimatorWindow)), (UioSteps, nameof(UioSteps)), (UioDocumentsPerStep, nameof(UioDocumentsPerStep)), (Trials, nameof(Trials)) })
            Positive(v, n);
        if (LocalLayers < 0 || LocalLayers >= Layers) throw new ArgumentException($"demo: local layers ({LocalLayers}) must lie in [0, layers ({Layers})): at least one layer stays global");
        if (LocalLayers > 0 && (LocalWindow <= 0 || LocalWindow > Window - StreamingSinks))
            throw new ArgumentException($"demo: the local window ({LocalWindow}) must lie in [1, the StreamingLLM window ({Window - StreamingSinks} = window {Window} - {StreamingSinks} sinks)] when there are local layers");
        if (SegmentLength <= 0 || SegmentLength > Window) throw new ArgumentException($"demo: the segment length ({SegmentLength}) must lie in [1, the window ({Window})]");
        if (SegmentLength % MemoryTokens != 0) throw new ArgumentException($"demo: the segment length ({SegmentLength}) must be a multiple of the memory tokens ({MemoryTokens})");
        if (MinSegments < 2 || MaxSegments < MinSegments) throw new ArgumentException($"demo: training documents need 2 <= min segments ({MinSegments}) <= max segments ({MaxSegments})");
        if (EvalWindows.Length == 0 || EvalWindows.Any(w => w < 1)) throw new ArgumentException("demo: give at least one evaluation length, each at least one window");
        if (Depths.Length == 0 || Depths.Any(d => !(d >= 0 && d <= 1))) throw new ArgumentException("demo: give at least one needle depth, each in [0, 1]");
        int fixedTokens = new PasskeyDocuments(new CharVocabulary(), KeyDigits).FixedLength(bos: true);
        if (fixedTokens > Window) throw new ArgumentException($"demo: a window of {Window} tokens cannot hold the needle, question and answer ({fixedTokens} tokens)");
    }
}
