using UioLlm.Model.Uio;

namespace UioLlm.Training.Demo;

/// <summary>Which gradient estimator a UIO run of the demo uses.</summary>
public enum DemoEstimator
{
    /// <summary>Truncated BPTT over the last S segments (naive form; UIO.md 2(b)).</summary>
    Tbptt,
    /// <summary>UIO's unbiased incremental estimator: reservoir of S graphs plus the compensation factor (2(d)).</summary>
    Unbiased,
    /// <summary>Full BPTT (2(a)): the exact gradient, the reference.</summary>
    Full,
}

/// <summary>How a UIO run draws the distance between the needle and the question.</summary>
public enum DemoRegime
{
    /// <summary>Stages over the distance (1, 2, 4, ... segments back), each warm-started from the last.</summary>
    Curriculum,
    /// <summary>The needle always more than S segments back (no short-distance stage): out of every truncated window.</summary>
    Far,
}

/// <summary>One UIO memory the demo trains and evaluates.</summary>
/// <param name="TransferHead">False: the paper's Table 6 ablation (memories through the frozen W_K, W_V).</param>
public sealed record DemoUioRun(DemoEstimator Estimator, int ReservoirSize, DemoRegime Regime, bool TransferHead = true)
{
    /// <summary>The column name, e.g. "UIO + unbiased (S=2) [far]" (no commas: it is a CSV field).</summary>
    public string Name =>
        $"UIO + {Estimator switch { DemoEstimator.Tbptt => "TBPTT", DemoEstimator.Unbiased => "unbiased", _ => "full BPTT" }}" +
        (Estimator == DemoEstimator.Full ? "" : $" (S={ReservoirSize})") +
        (Regime == DemoRegime.Far ? " [far]" : "") + (TransferHead ? "" : " [no transfer head]");
}

/// <summary>Extra runs the demo can add to its default four (the paper's ablations in miniature).</summary>
public enum DemoAblation
{
    None,
    /// <summary>Reservoir size S = 1, 2, 4 for the unbiased estimator in the far regime (the paper's Table 5).</summary>
    Reservoir,
    /// <summary>The unbiased estimator without the transfer head (the paper's Table 6).</summary>
    TransferHead,
    /// <summary>Full BPTT in the far regime: the exact gradient the estimators approximate.</summary>
    FullBptt,
}

/// <summary>
/// Every size and step count of the built-in demo (<see cref="DemoRunner"/>). <see cref="Default"/> is the
/// full run (minutes on two cores); <see cref="Quick"/> shrinks everything for tests.
/// </summary>
public sealed record DemoSettings
{
    /// <summary>Seeds the base weights, the data, the adapters and the estimators: one seed, one result.</summary>
    public int Seed { get; init; }

    /// <summary>CPU threads for the kernels (0: all cores).</summary>
    public int Threads { get; init; }

    // ---- the base model
    /// <summary>The base model's trained context (its window) in tokens.</summary>
    public int Window { get; init; } = 64;
    public int Dim { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int HiddenDim { get; init; } = 256;
    /// <summary>
    /// The first LocalLayers layers attend only to the last <see cref="LocalWindow"/> tokens
    /// (<see cref="Model.LlamaConfig.LocalLayers"/>). A KV memory carries no content at layer 0 (its state there is
    /// the normalised &lt;mem&gt; embedding), so the base must retrieve through a later layer: with layers 0 and 1
    /// local, the lookup of a far key can only happen in layer 2 or 3, whose memory states the encoder fills.
    /// </summary>
    public int LocalLayers { get; init; } = 2;
    /// <summary>The local layers' window in tokens (2: a token and its predecessor, the previous-token feature an induction lookup needs).</summary>
    public int LocalWindow { get; init; } = 2;
    /// <summary>Digits of a passkey; three digits are one token (one of 900 keys).</summary>
    public int KeyDigits { get; init; } = 3;
    /// <summary>Share of filler sentences that carry a random number: the key is "the number after '#'", not the only number.</summary>
    public double DistractorShare { get; init; } = 0.5;
    /// <summary>
    /// Share of pre-training windows that are induction drills (<see cref="InductionDrills"/>: a run of random numbers
    /// repeated) rather than passkey documents. They teach the lookup at every repeated token instead of one answer a
    /// window: with 0.5 the base's in-window accuracy passed 98 % by step 1,000 (without them: 15-20 % after 3,000).
    /// </summary>
    public double DrillShare { get; init; } = 0.5;
    /// <summary>Optimizer steps of pre-training, each over <see cref="PretrainBatch"/> windows.</summary>
    public int PretrainSteps { get; init; } = 2000;
    public int PretrainBatch { get; init; } = 8;
    public float PretrainLearningRate { get; init; } = 3e-3f;

    // ---- the UIO memory
    /// <summary>UIO's segment length l (at most the window; memory rows + local tokens must fit the window).</summary>
    public int SegmentLength { get; init; } = 32;
    /// <summary>Memory tokens n per segment of <see cref="SegmentLength"/> tokens.</summary>
    public int MemoryTokens { get; init; } = 1;
    public int Rank { get; init; } = 32;
    public float Alpha { get; init; } = 64;
    /// <summary>Truncation window and reservoir size S of the default runs.</summary>
    public int EstimatorWindow { get; init; } = 2;
    public float UioLearningRate { get; init; } = 3e-3f;
    /// <summary>
    /// Documents per UIO optimizer step. One answer token per document makes a single-document gradient mostly noise:
    /// at distance 1 the memory stayed at chance with 1 document a step and reached 77-100 % within 1,000 steps with 8-16.
    /// </summary>
    public int UioBatch { get; init; } = 16;
    /// <summary>The curriculum's stages: the largest needle-to-question distance (segments) of each stage; a stage draws distances up to it.</summary>
    public int[] Curriculum { get; init; } = [1, 2, 4, 8, 16];
    /// <summary>Optimizer steps per curriculum stage.</summary>
    public int StageSteps { get; init; } = 300;
    /// <summary>Optimizer steps of a far-regime run (its documents are the longest, so a step costs ~2x a curriculum step on average).</summary>
    public int FarSteps { get; init; } = 900;
    /// <summary>Filler segments a training document may have before its needle's segment (drawn from 0 .. this).</summary>
    public int ExtraSegments { get; init; } = 1;
    /// <summary>Extra runs beside the default four.</summary>
    public DemoAblation Ablation { get; init; }

    // ---- the evaluation
    /// <summary>Context lengths in windows.</summary>
    public int[] EvalWindows { get; init; } = [1, 2, 4, 8, 16];
    /// <summary>Needle depths (fraction of the filler before the needle).</summary>
    public double[] Depths { get; init; } = [0.0, 0.25, 0.5, 0.75, 1.0];
    /// <summary>Keys per (length, depth).</summary>
    public int Trials { get; init; } = 10;
    /// <summary>Needle-to-question distances (segments) of the distance table.</summary>
    public int[] EvalDistances { get; init; } = [1, 2, 3, 4, 6, 8, 12, 16, 24];
    /// <summary>Keys per distance.</summary>
    public int DistanceTrials { get; init; } = 40;
    public int StreamingSinks { get; init; } = 4;
    /// <summary>Also measure the diagnostics: attention mass on memory per layer, memory swap, ablated layers.</summary>
    public bool Diagnose { get; init; }

    public static DemoSettings Default => new();

    /// <summary>Tiny everything: runs in seconds; its numbers mean nothing.</summary>
    public static DemoSettings Quick => new()
    {
        Window = 48, Dim = 32, Layers = 3, Heads = 2, HiddenDim = 64, LocalLayers = 1, LocalWindow = 2,
        PretrainSteps = 6, PretrainBatch = 2, SegmentLength = 24, MemoryTokens = 2, Rank = 4, Alpha = 8,
        Curriculum = [1, 3], StageSteps = 2, FarSteps = 3, UioBatch = 2, EvalWindows = [1, 2, 4], Depths = [0.0, 0.5], Trials = 1,
        EvalDistances = [1, 3], DistanceTrials = 1,
    };

    /// <summary>The UIO runs: the two estimators in both regimes, plus the ablation's.</summary>
    public IReadOnlyList<DemoUioRun> Runs()
    {
        int s = EstimatorWindow;
        var runs = new List<DemoUioRun>
        {
            new(DemoEstimator.Tbptt, s, DemoRegime.Curriculum), new(DemoEstimator.Unbiased, s, DemoRegime.Curriculum),
            new(DemoEstimator.Tbptt, s, DemoRegime.Far), new(DemoEstimator.Unbiased, s, DemoRegime.Far),
        };
        switch (Ablation)
        {
            case DemoAblation.Reservoir:
                runs.AddRange(new[] { 1, 4 }.Where(r => r != s).Select(r => new DemoUioRun(DemoEstimator.Unbiased, r, DemoRegime.Far)));
                break;
            case DemoAblation.TransferHead:
                runs.Add(new DemoUioRun(DemoEstimator.Unbiased, s, DemoRegime.Curriculum, TransferHead: false));
                break;
            case DemoAblation.FullBptt:
                runs.Add(new DemoUioRun(DemoEstimator.Full, s, DemoRegime.Far));
                break;
        }
        return runs;
    }

    /// <summary>The UIO configuration of a run (the position budget is the base's window).</summary>
    public UioConfig UioConfig(DemoUioRun run) => new()
    {
        SegmentLength = SegmentLength, MemoryTokens = MemoryTokens,
        EncoderRank = Rank, EncoderAlpha = Alpha, TransferRank = Rank, TransferAlpha = Alpha, TransferHead = run.TransferHead,
    };

    /// <summary>The longest context (tokens) whose memories + local tokens stay within the window.</summary>
    public long BudgetTokens => UioConfig(Runs()[0]).MaxContextTokens(Window);

    /// <summary>Whether a context of <paramref name="windows"/> windows lies past <see cref="BudgetTokens"/> (read with extrapolation, marked).</summary>
    public bool BeyondBudget(int windows) => (long)windows * Window > BudgetTokens;

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
                     (EstimatorWindow, nameof(EstimatorWindow)), (StageSteps, nameof(StageSteps)), (FarSteps, nameof(FarSteps)), (UioBatch, nameof(UioBatch)), (Trials, nameof(Trials)), (DistanceTrials, nameof(DistanceTrials)) })
            Positive(v, n);
        if (LocalLayers < 0 || LocalLayers >= Layers) throw new ArgumentException($"demo: local layers ({LocalLayers}) must lie in [0, layers ({Layers})): at least one layer stays global");
        if (LocalLayers > 0 && (LocalWindow <= 0 || LocalWindow > Window - StreamingSinks))
            throw new ArgumentException($"demo: the local window ({LocalWindow}) must lie in [1, the StreamingLLM window ({Window - StreamingSinks} = window {Window} - {StreamingSinks} sinks)] when there are local layers");
        if (!(DistractorShare >= 0 && DistractorShare <= 1)) throw new ArgumentException($"demo: the distractor share ({DistractorShare}) must lie in [0, 1]");
        if (!(DrillShare >= 0 && DrillShare < 1)) throw new ArgumentException($"demo: the induction-drill share ({DrillShare}) must lie in [0, 1): some windows must be passkey documents");
        if (SegmentLength <= 0 || SegmentLength > Window) throw new ArgumentException($"demo: the segment length ({SegmentLength}) must lie in [1, the window ({Window})]");
        if (SegmentLength % MemoryTokens != 0) throw new ArgumentException($"demo: the segment length ({SegmentLength}) must be a multiple of the memory tokens ({MemoryTokens})");
        if (Curriculum.Length == 0 || Curriculum[0] < 1 || Curriculum.Zip(Curriculum.Skip(1)).Any(p => p.Second <= p.First))
            throw new ArgumentException($"demo: the curriculum ({string.Join(", ", Curriculum)}) must be increasing distances of at least 1 segment");
        if (Curriculum[^1] <= EstimatorWindow)
            throw new ArgumentException($"demo: the curriculum's last distance ({Curriculum[^1]}) must exceed the truncation window S = {EstimatorWindow}, or the far regime has no distance to train on");
        if (EvalWindows.Length == 0 || EvalWindows.Any(w => w < 1)) throw new ArgumentException("demo: give at least one evaluation length, each at least one window");
        if (Depths.Length == 0 || Depths.Any(d => !(d >= 0 && d <= 1))) throw new ArgumentException("demo: give at least one needle depth, each in [0, 1]");
        if (EvalDistances.Length == 0 || EvalDistances.Any(d => d < 1)) throw new ArgumentException("demo: give at least one evaluation distance, each at least 1 segment");
        int fixedTokens = new PasskeyDocuments(new CharVocabulary(), KeyDigits).FixedLength(bos: true);
        if (fixedTokens > Window) throw new ArgumentException($"demo: a window of {Window} tokens cannot hold the needle, question and answer ({fixedTokens} tokens)");
        // The position budget (UIO.md): every training document must fit; evaluation marks longer contexts.
        var config = UioConfig(Runs()[0]);
        config.Validate(new Model.LlamaConfig { Dim = Dim, HiddenDim = HiddenDim, Layers = Layers, Heads = Heads, KvHeads = Heads, VocabSize = 8, MaxSeqLen = Window });
        int maxMemories = config.MaxMemorySegments(Window);
        int trainingSegments = Curriculum[^1] + 1 + ExtraSegments;
        if (trainingSegments - 1 > maxMemories)
            throw new ArgumentException(
                $"demo: training documents of up to {trainingSegments} segments need {trainingSegments - 1} memories x n = {MemoryTokens} rows + l = {SegmentLength} local tokens = " +
                $"{(trainingSegments - 1) * MemoryTokens + SegmentLength} positions, past the base's window of {Window} (at most {maxMemories} memories fit); shorten the curriculum or the extra segments");
    }
}
