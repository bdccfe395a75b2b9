using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Methods;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Uio;
using UioLlm.Training.Data;
using UioLlm.Training.Demo;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.Uio;
using UioLlm.Training.Pretrain;

namespace UioLlm.Training.Compare;

/// <summary>
/// What <c>uio compare --books</c> runs (the paper's PG19 table in miniature): a base pre-trained with a short window on
/// some public-domain books, every method trained on the same books, perplexity at 1x..16x the window on a book that
/// neither the base nor any method saw. Book paths are relative to <see cref="DataFolder"/> (the shared data).
/// </summary>
public sealed record BooksSettings
{
    public int Seed { get; init; }

    /// <summary>CPU threads (0: all cores).</summary>
    public int Threads { get; init; }

    /// <summary>The shared data folder the book and tokenizer paths are relative to.</summary>
    public string DataFolder { get; init; } = "";

    public IReadOnlyList<string> TrainBooks { get; init; } =
        ["text/gutenberg/pg14263_katrine_lane.txt", "text/gutenberg/pg16215_jack_sheppard_ainsworth.txt", "text/gutenberg/pg3261_news_from_nowhere_morris.txt"];

    /// <summary>The evaluation book: read by no pre-training or training step.</summary>
    public string HeldOutBook { get; init; } = "text/moby_dick.txt";

    /// <summary>stories260K's 512-piece SentencePiece vocabulary (llama2.c format).</summary>
    public string TokenizerFile { get; init; } = "models/stories260K/tok512.bin";

    /// <summary>The base's trained context (tokens): "1x".</summary>
    public int Window { get; init; } = 64;
    public int Dim { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int HiddenDim { get; init; } = 256;
    public int PretrainSteps { get; init; } = 3000;
    public int PretrainBatch { get; init; } = 8;
    public float PretrainLearningRate { get; init; } = 3e-3f;

    /// <summary>UIO's l (and every segment-wise method's segment).</summary>
    public int SegmentLength { get; init; } = 32;
    /// <summary>UIO's n (and the memory / summary / slot rows per segment of the other compressing methods).</summary>
    public int MemoryTokens { get; init; } = 1;
    public int Rank { get; init; } = 32;
    public float Alpha { get; init; } = 64;
    /// <summary>UIO's reservoir S (unbiased incremental estimator).</summary>
    public int EstimatorWindow { get; init; } = 2;

    /// <summary>Training documents are this many windows long (plus the last target).</summary>
    public int TrainWindows { get; init; } = 4;
    public int TrainSteps { get; init; } = 300;
    public int TrainBatch { get; init; } = 8;
    public float LearningRate { get; init; } = 1e-3f;

    /// <summary>Context lengths evaluated, in windows.</summary>
    public int[] EvalWindows { get; init; } = [1, 2, 4, 8, 16];
    /// <summary>Excerpts of the held-out book, evenly spaced through it.</summary>
    public int EvalDocuments { get; init; } = 32;

    /// <summary>Method specs as in <see cref="CompareSettings.Methods"/>; empty: UIO and every registered trainable method.</summary>
    public IReadOnlyList<string> Methods { get; init; } = [];

    public static BooksSettings Default => new();

    /// <summary>A tiny run for tests (seconds): the same path, every size cut down.</summary>
    public static BooksSettings Quick => new()
    {
        Window = 16, Dim = 16, Layers = 2, Heads = 2, HiddenDim = 32, PretrainSteps = 3, PretrainBatch = 2, SegmentLength = 8, Rank = 4, Alpha = 8,
        TrainWindows = 2, TrainSteps = 2, TrainBatch = 2, EvalWindows = [1, 2], EvalDocuments = 1,
    };

    public int LongestTokens => EvalWindows.Max() * Window;

    public string DefaultSpec(string name) => MethodSpecs.Default(name, Window, SegmentLength, MemoryTokens, LongestTokens);

    public IReadOnlyList<string> Specs() =>
        Methods.Count > 0 ? Methods.Select(m => m.Contains(':') ? m : DefaultSpec(m)).ToList() : ["uio", .. TrainableMethods.All.Select(m => DefaultSpec(m.Name))];

    public UioConfig UioConfig => new()
    {
        SegmentLength = SegmentLength, MemoryTokens = MemoryTokens, EncoderRank = Rank, EncoderAlpha = Alpha, TransferRank = Rank, TransferAlpha = Alpha,
        AllowExtrapolation = true,
    };

    /// <summary>Throws ArgumentException naming the first setting that cannot work.</summary>
    public void Validate()
    {
        foreach (var (v, n) in new[] { (Window, nameof(Window)), (Dim, nameof(Dim)), (Layers, nameof(Layers)), (Heads, nameof(Heads)), (HiddenDim, nameof(HiddenDim)),
                     (PretrainSteps, nameof(PretrainSteps)), (PretrainBatch, nameof(PretrainBatch)), (SegmentLength, nameof(SegmentLength)), (MemoryTokens, nameof(MemoryTokens)),
                     (Rank, nameof(Rank)), (EstimatorWindow, nameof(EstimatorWindow)), (TrainWindows, nameof(TrainWindows)), (TrainSteps, nameof(TrainSteps)),
                     (TrainBatch, nameof(TrainBatch)), (EvalDocuments, nameof(EvalDocuments)) })
            if (v <= 0) throw new ArgumentOutOfRangeException(n, v, $"books: {n} must be positive");
        if (Dim % Heads != 0) throw new ArgumentException($"books: the width ({Dim}) must be a multiple of the heads ({Heads})");
        if (Window % SegmentLength != 0) throw new ArgumentException($"books: the window ({Window}) must be a whole number of segments of {SegmentLength} tokens");
        if (EvalWindows.Length == 0 || EvalWindows.Any(w => w < 1)) throw new ArgumentException("books: give at least one evaluation length, each at least one window");
        if (TrainBooks.Count == 0) throw new ArgumentException("books: give at least one training book");
        if (TrainBooks.Contains(HeldOutBook)) throw new ArgumentException($"books: the held-out book {HeldOutBook} is also a training book");
    }
}

/// <summary>Perplexity of one method at one context length, over every evaluation excerpt.</summary>
/// <param name="Windows">Context length in windows.</param>
/// <param name="Perplexity">exp(mean NLL) over every token of the Windows x window tokens read (the first has no context and is left out).</param>
/// <param name="LastWindowPerplexity">The same over the last window's tokens only: the same target tokens at every length, so what more context adds.</param>
/// <param name="OutOfRange">Some query read a key beyond the method's trained range (extrapolation).</param>
public sealed record BooksCell(int Windows, int Tokens, double Perplexity, double LastWindowPerplexity, bool OutOfRange);

/// <summary>One method's row of the books comparison (a reference row, untrained, has no parameters or step time).</summary>
public sealed record BooksRow(string Method, string Spec, long TrainableParameters, double SecondsPerStep, long MemoryBytes, double FinalLoss,
    IReadOnlyList<BooksCell> Cells, string? Failure = null);

public sealed record BooksResult(IReadOnlyList<BooksRow> Rows, BooksSettings Settings, double BasePerplexity, int TrainTokens, int HeldOutTokens, TimeSpan Elapsed,
    string Device, bool BaseFromCache);

/// <summary>
/// The books comparison: a base (every layer global, so every method runs on it) pre-trained on windows of the training
/// books (cached in the output folder), three untrained references (the base over a sliding window, the base with full
/// attention past its window, the base reading each segment of l tokens alone: UIO without its memory), then UIO and every trained method fitted on the same training documents for the same
/// steps, documents per step and learning rate, and read on the held-out book through its own session. Rows are
/// cached in their folders (with a fingerprint of every setting), so a stopped run resumes with the methods it lacks.
/// </summary>
public sealed class BooksCompareRunner(BooksSettings settings, IProgress<DemoProgress>? progress = null, string? outFolder = null)
{
    public const string BasePhase = "base";

    /// <summary>Bumped whenever the base's pre-training changes, so a cached base from older code is not reused.</summary>
    private const string BaseRecipe = "books-base-1";

    private readonly BooksSettings settings = settings ?? throw new ArgumentNullException(nameof(settings));
    private ITokenizer tokenizer = null!;
    private List<int[]> trainBooks = [];
    private string baseIdentity = "";

    public BooksResult Run()
    {
        settings.Validate();
        var clock = Stopwatch.StartNew();
        tokenizer = Tokenizer.Load(Resolve(settings.TokenizerFile));
        int documentTokens = settings.TrainWindows * settings.Window + 1;
        trainBooks = settings.TrainBooks.Select(b => BookTexts.Tokens(Resolve(b), tokenizer, documentTokens)).ToList();
        var heldOut = BookTexts.Tokens(Resolve(settings.HeldOutBook), tokenizer, settings.LongestTokens * settings.EvalDocuments);
        var excerpts = Excerpts(heldOut);
        using var accelerator = Accelerator.Create(AcceleratorKind.Auto, settings.Threads);
        string folder = outFolder ?? Path.Combine(Path.GetTempPath(), "uio-books-" + Guid.NewGuid().ToString("N"));
        try
        {
            progress?.Report(new DemoProgress(BasePhase, 0, settings.PretrainSteps, "loading or pre-training the books base"));
            var config = BaseConfig;
            string fingerprint = BaseFingerprint;
            var (weights, fromCache, sha) = TinyBase.LoadOrCreate(accelerator, config, Path.Combine(folder, "base"), fingerprint,
                () => TinyBase.Pretrain(accelerator, config, Seeds.Derive(settings.Seed, 1), settings.PretrainSteps, settings.PretrainBatch, settings.PretrainLearningRate,
                    PretrainWindow, (step, loss) => progress?.Report(new DemoProgress(BasePhase, step, settings.PretrainSteps, $"loss {loss:F3}"))));
            baseIdentity = $"{fingerprint};base-sha256={sha}";
            using (weights)
            {
                progress?.Report(new DemoProgress(BasePhase, settings.PretrainSteps, settings.PretrainSteps, fromCache ? "loaded from the cache" : "pre-trained"));
                var model = new LlamaModel(weights);
                var rows = new List<BooksRow>();
                foreach (var (label, spec) in References())
                    rows.Add(Cached(Path.Combine(folder, "books", DemoRunner.Slug(label)), spec, () => Reference(model, label, spec, excerpts)));
                foreach (var spec in settings.Specs())
                    rows.Add(Cached(Path.Combine(folder, "books", DemoRunner.Slug(spec)), spec, () => MeasureMethod(model, spec, Path.Combine(folder, "books", DemoRunner.Slug(spec)), excerpts)));
                double basePerplexity = rows[0].Cells.FirstOrDefault(c => c.Windows == 1)?.Perplexity ?? double.NaN;
                return new BooksResult(rows, settings, basePerplexity, trainBooks.Sum(b => b.Length), heldOut.Length, clock.Elapsed, accelerator.Description, fromCache);
            }
        }
        finally
        {
            if (outFolder is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    private string Resolve(string relative) => Path.IsPathRooted(relative) ? relative : Path.Combine(settings.DataFolder, relative);

    /// <summary>The base: a tiny Llama over the tokenizer's vocabulary, context = one window, every layer global.</summary>
    public LlamaConfig BaseConfig => new()
    {
        Dim = settings.Dim, HiddenDim = settings.HiddenDim, Layers = settings.Layers, Heads = settings.Heads, KvHeads = settings.Heads,
        VocabSize = tokenizer.VocabSize, MaxSeqLen = settings.Window, TiedEmbeddings = true, BosId = tokenizer.BosId, EosId = tokenizer.EosId,
    };

    private string BaseFingerprint => string.Create(CultureInfo.InvariantCulture,
        $"{BaseRecipe};seed={settings.Seed};books={string.Join('+', settings.TrainBooks)};tokens={trainBooks.Sum(b => (long)b.Length)};vocab={tokenizer.VocabSize};" +
        $"window={settings.Window};dim={settings.Dim};layers={settings.Layers};heads={settings.Heads};hidden={settings.HiddenDim};" +
        $"steps={settings.PretrainSteps};batch={settings.PretrainBatch};lr={settings.PretrainLearningRate};threads={settings.Threads}");

    /// <summary>Pre-training window <paramref name="index"/>: window + 1 tokens at a seeded offset of a training book (chosen by length), every token scored.</summary>
    private (int[] Tokens, int[] Targets) PretrainWindow(long index)
    {
        var random = new SeededRandom(settings.Seed, stream: 700_000 + index);
        long total = trainBooks.Sum(b => (long)(b.Length - settings.Window));
        long at = (long)(random.NextDouble() * total);
        int book = 0;
        while (at >= trainBooks[book].Length - settings.Window) { at -= trainBooks[book].Length - settings.Window; book++; }
        var tokens = trainBooks[book].AsSpan((int)at, settings.Window + 1).ToArray();
        return (tokens, tokens[1..]);
    }

    /// <summary>The training documents: the training books cut into consecutive pieces of TrainWindows windows + 1 token, shuffled per epoch.</summary>
    private InMemoryTrainingData TrainingData()
    {
        int length = settings.TrainWindows * settings.Window + 1;
        var examples = new List<int[]>();
        foreach (var book in trainBooks)
            for (int start = 0; start + length <= book.Length; start += length - 1)
                examples.Add(book.AsSpan(start, length).ToArray());
        return new InMemoryTrainingData(examples, shuffleSeed: Seeds.Derive(settings.Seed, 11));
    }

    /// <summary>EvalDocuments excerpts of the longest length, evenly spaced through the held-out book.</summary>
    private List<int[]> Excerpts(int[] book)
    {
        int length = settings.LongestTokens;
        long gap = (book.Length - (long)length * settings.EvalDocuments) / settings.EvalDocuments;
        return Enumerable.Range(0, settings.EvalDocuments)
            .Select(i => book.AsSpan((int)(i * (length + gap) + gap / 2), length).ToArray())
            .ToList();
    }

    private IEnumerable<(string Label, string Spec)> References()
    {
        yield return ($"base (sliding window of {settings.Window})", "base");
        yield return ("base (full attention)", "full");
        // UIO without its memory: each segment of l tokens read alone, every token seeing only its segment so far
        // (UIO's decoder without memories). What UIO's memory adds is the gap between this row and UIO's.
        yield return ($"base (segments of {settings.SegmentLength} read alone)", $"base:window={settings.SegmentLength}:keep=0");
    }

    private BooksRow Reference(LlamaModel model, string label, string spec, List<int[]> excerpts)
    {
        using var factory = MethodRegistry.Resolve(spec, new MethodContext(model)).Single();
        var cells = Evaluate(label, factory.Create, excerpts, out long memory);
        return new BooksRow(label, spec, 0, 0, memory, double.NaN, cells);
    }

    private BooksRow Cached(string folder, string spec, Func<BooksRow> measure)
    {
        string fingerprint = RowFingerprint(spec);
        string file = Path.Combine(folder, CompareRunner.RowFile);
        if (BooksRowFile.TryRead(file, fingerprint) is { } cached)
        {
            progress?.Report(new DemoProgress(cached.Method, 1, 1, $"read from the cache {folder} (fingerprint matches; delete the folder to measure again)"));
            return cached;
        }
        var row = measure();
        if (row.Failure is null) BooksRowFile.Write(file, fingerprint, row);
        return row;
    }

    private string RowFingerprint(string spec) => string.Create(CultureInfo.InvariantCulture,
        $"{baseIdentity};spec={spec};l={settings.SegmentLength};n={settings.MemoryTokens};rank={settings.Rank};alpha={settings.Alpha};s={settings.EstimatorWindow};" +
        $"train={settings.TrainWindows}x{settings.TrainSteps}x{settings.TrainBatch};lr={settings.LearningRate};held-out={settings.HeldOutBook};" +
        $"eval={EvalRecipe}:{string.Join('-', settings.EvalWindows)}x{settings.EvalDocuments};workers={Workers}");

    /// <summary>Bumped whenever the evaluation changes, so rows measured by older code are measured again.</summary>
    private const string EvalRecipe = "last-window-2";

    private int Workers => Math.Min(settings.TrainBatch, settings.Threads > 0 ? settings.Threads : Environment.ProcessorCount);

    private ITrainableMethod Create(LlamaModel model, string spec)
    {
        int seed = Seeds.Derive(settings.Seed, 3);
        return spec == "uio" ? UioTrainable.Unbiased(model, settings.UioConfig, settings.EstimatorWindow, seed) : TrainableMethods.Create(spec, model, seed);
    }

    private BooksRow MeasureMethod(LlamaModel model, string spec, string folder, List<int[]> excerpts)
    {
        ITrainableMethod method;
        try
        {
            method = Create(model, spec);
        }
        catch (ArgumentException e)
        {
            return new BooksRow(spec, spec, 0, 0, 0, double.NaN, [], $"cannot be built: {e.Message}");
        }
        using (method)
        {
            string name = method.Name == spec ? spec : $"{method.Name} ({spec})";
            long parameters = method.Parameters.Sum(p => (long)p.Parameter.Value.Length);
            double seconds, loss;
            try
            {
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
                var options = new TrainingOptions
                {
                    TotalSteps = settings.TrainSteps, DocumentsPerStep = settings.TrainBatch, Workers = Workers,
                    PeakLearningRate = settings.LearningRate, MinLearningRate = settings.LearningRate / 10, WarmupSteps = Math.Max(1, settings.TrainSteps / 20),
                    Seed = settings.Seed, WeightDecay = 0f, BaseModelNameOrPath = "uio-books-base",
                };
                (seconds, loss) = MethodTraining.Run(method, TrainingData(), options, Path.Combine(folder, "train"),
                    (step, recent) => progress?.Report(new DemoProgress(name, step, settings.TrainSteps, $"loss {recent:F3}")));
                method.SaveAdapter(Path.Combine(folder, "adapter"), "uio-books-base");
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return new BooksRow(name, spec, parameters, 0, 0, double.NaN, [], $"training failed: {e.Message}");
            }
            try
            {
                var cells = Evaluate(name, method.OpenSession, excerpts, out long memory);
                return new BooksRow(name, spec, parameters, seconds / settings.TrainSteps, memory, loss, cells);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return new BooksRow(name, spec, parameters, seconds / settings.TrainSteps, 0, loss, [], $"evaluation failed: {e.Message}");
            }
        }
    }

    /// <summary>
    /// For each context length c (windows) and excerpt: a fresh session reads the excerpt's last c windows, so every
    /// length is scored on the SAME target tokens (the excerpt's last window) with more or less before them; the NLL of
    /// every token read but the first, and of the last window's tokens, summed over excerpts. <paramref name="memoryBytes"/>:
    /// what the session holds after reading the longest context (first excerpt).
    /// </summary>
    private List<BooksCell> Evaluate(string name, Func<ILongContextSession> open, List<int[]> excerpts, out long memoryBytes)
    {
        var windows = settings.EvalWindows.Distinct().Order().ToArray();
        int w = settings.Window;
        var whole = new double[windows.Length];
        var last = new double[windows.Length];
        var outOfRange = new bool[windows.Length];
        memoryBytes = 0;
        for (int e = 0; e < excerpts.Count; e++)
        {
            for (int i = 0; i < windows.Length; i++)
            {
                int length = windows[i] * w;
                using var session = open();
                var logProbs = session.Feed(excerpts[e].AsSpan(excerpts[e].Length - length, length));
                for (int t = 1; t < length; t++) whole[i] -= logProbs[t];
                for (int t = Math.Max(1, length - w); t < length; t++) last[i] -= logProbs[t];
                outOfRange[i] |= session.OutOfTrainedRange;
                if (e == 0 && i == windows.Length - 1) memoryBytes = session.KvBytes;
            }
            progress?.Report(new DemoProgress(name, e + 1, excerpts.Count, "reading the held-out book"));
        }
        return windows.Select((c, i) => new BooksCell(c, c * w, Math.Exp(whole[i] / ((c * w - 1.0) * excerpts.Count)),
                Math.Exp(last[i] / ((double)(c * w - Math.Max(1, c * w - w)) * excerpts.Count)), outOfRange[i]))
            .ToList();
    }
}

/// <summary>One trainer run of a method as a comparison does it: its wall time and the mean loss of its last 50 steps.</summary>
public static class MethodTraining
{
    /// <param name="onStep">The step and the running mean loss of the last 50 steps.</param>
    public static (double Seconds, double Loss) Run(ITrainableMethod method, ITrainingData data, TrainingOptions options, string folder, Action<int, double>? onStep = null)
    {
        var recent = new Queue<double>();
        var callbacks = new TrainerCallbacks
        {
            Progress = new SyncProgress<TrainingProgress>(p =>
            {
                recent.Enqueue(p.Loss);
                if (recent.Count > 50) recent.Dequeue();
                onStep?.Invoke(p.Step, recent.Average());
            }),
        };
        using var trainer = new Trainer(method, data, options, folder, callbacks);
        var clock = Stopwatch.StartNew();
        trainer.Run();
        return (clock.Elapsed.TotalSeconds, recent.Count > 0 ? recent.Average() : double.NaN);
    }
}

/// <summary>A measured books row on disk (<see cref="RowFile"/>).</summary>
public static class BooksRowFile
{
    public static void Write(string path, string fingerprint, BooksRow row) => RowFile.Write(path, fingerprint, new JsonObject
    {
        ["method"] = row.Method, ["spec"] = row.Spec, ["trainable_parameters"] = row.TrainableParameters,
        ["seconds_per_step"] = row.SecondsPerStep, ["memory_bytes"] = row.MemoryBytes, ["final_loss"] = double.IsNaN(row.FinalLoss) ? null : row.FinalLoss,
        ["cells"] = new JsonArray(row.Cells.Select(c => (JsonNode?)new JsonObject
        {
            ["windows"] = c.Windows, ["tokens"] = c.Tokens, ["perplexity"] = c.Perplexity, ["last_window_perplexity"] = c.LastWindowPerplexity, ["out_of_range"] = c.OutOfRange,
        }).ToArray()),
    });

    /// <summary>The row at <paramref name="path"/> when it exists, parses and was measured under <paramref name="fingerprint"/>; null otherwise.</summary>
    public static BooksRow? TryRead(string path, string fingerprint) => RowFile.TryRead(path, fingerprint, root =>
    {
        var cells = root.GetProperty("cells").EnumerateArray()
            .Select(e => new BooksCell(e.GetProperty("windows").GetInt32(), e.GetProperty("tokens").GetInt32(), e.GetProperty("perplexity").GetDouble(),
                e.GetProperty("last_window_perplexity").GetDouble(), e.GetProperty("out_of_range").GetBoolean()))
            .ToList();
        if (cells.Count == 0 || cells.Any(c => !(c.Perplexity > 0) || !(c.LastWindowPerplexity > 0))) return null;
        var loss = root.GetProperty("final_loss");
        return new BooksRow(root.GetProperty("method").GetString() ?? throw new FormatException("method"), root.GetProperty("spec").GetString() ?? "",
            root.GetProperty("trainable_parameters").GetInt64(), root.GetProperty("seconds_per_step").GetDouble(), root.GetProperty("memory_bytes").GetInt64(),
            loss.ValueKind == JsonValueKind.Null ? double.NaN : loss.GetDouble(), cells);
    });
}

/// <summary>The books comparison as CSV (one line per method and length).</summary>
public static class BooksCsv
{
    public const string Header = "method,spec,windows,tokens,perplexity,last_window_perplexity,out_of_range,trainable_parameters,seconds_per_step,memory_bytes,final_loss,failure";

    public static string Write(BooksResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var lines = new List<string> { Header };
        foreach (var row in result.Rows)
        {
            string tail = string.Create(CultureInfo.InvariantCulture, $"{row.TrainableParameters},{row.SecondsPerStep:G4},{row.MemoryBytes},{row.FinalLoss:G4},{Eval.EvalOutput.Quote(row.Failure ?? "")}");
            if (row.Cells.Count == 0) lines.Add($"{Eval.EvalOutput.Quote(row.Method)},{Eval.EvalOutput.Quote(row.Spec)},,,,,,{tail}");
            foreach (var c in row.Cells)
                lines.Add(string.Create(CultureInfo.InvariantCulture,
                    $"{Eval.EvalOutput.Quote(row.Method)},{Eval.EvalOutput.Quote(row.Spec)},{c.Windows},{c.Tokens},{c.Perplexity:G5},{c.LastWindowPerplexity:G5},{(c.OutOfRange ? 1 : 0)},{tail}"));
        }
        return string.Join('\n', lines) + "\n";
    }
}
