using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Baselines;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using UioLlm.Training.Optim;
using UioLlm.Training.Pretrain;

namespace UioLlm.Training.Demo;

/// <summary>
/// The built-in demo, end to end and without any file: a character vocabulary and seeded passkey documents
/// whose filler holds distractor numbers (the key is "the number after '#'"); a 4-layer Llama base pre-trained
/// (every weight, AdamW) on one-window passkey documents and induction drills (repeated runs of random numbers), with its first layers
/// local so the lookup of a far key happens in a layer whose memory states carry content; the base's ceiling;
/// UIO memories trained with truncated BPTT and with the unbiased estimator, both with a distance curriculum and
/// with the needle always beyond the truncation window; then passkey accuracy against context length, needle
/// depth and needle distance for the base (its window), StreamingLLM and every UIO memory, on documents from
/// seeds the training never saw. Deterministic for a given seed and thread count.
/// </summary>
public sealed class DemoRunner
{
    public const string PretrainPhase = "pre-training the base";
    public const string CeilingPhase = "base ceiling";
    public const string EvaluatePhase = "passkey evaluation";
    public const string DiagnosePhase = "diagnostics";

    /// <summary>Bumped whenever the base's pre-training changes, so a cached base from older code is not reused.</summary>
    private const string BaseRecipe = "demo-base-4";

    private readonly DemoSettings settings;
    private readonly IProgress<DemoProgress>? progress;
    private readonly string? outFolder;
    private readonly CharVocabulary vocabulary = new();
    private readonly PasskeyDocuments documents;
    private readonly List<DemoPhase> phases = [];
    private readonly List<DemoStageLoss> stageLosses = [];
    private string baseSha256 = "";

    /// <param name="outFolder">Where the pre-trained base is cached (base/) and the UIO trainers keep their metrics and adapters (runs/); null: a temporary folder, deleted afterwards.</param>
    public DemoRunner(DemoSettings settings, IProgress<DemoProgress>? progress = null, string? outFolder = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        this.settings = settings;
        this.progress = progress;
        this.outFolder = outFolder;
        documents = new PasskeyDocuments(vocabulary, settings.KeyDigits, settings.DistractorShare);
    }

    public string BaseMethod => $"base (window {settings.Window})";
    public string StreamingMethod => $"StreamingLLM ({settings.StreamingSinks} sinks + {settings.Window - settings.StreamingSinks})";
    public IReadOnlyList<DemoUioRun> Runs => settings.Runs();
    public IReadOnlyList<string> Methods => [BaseMethod, StreamingMethod, .. Runs.Select(r => r.Name)];

    /// <summary>Every phase name in order (for progress displays).</summary>
    public IReadOnlyList<string> PhaseNames =>
        [PretrainPhase, CeilingPhase, .. Runs.Select(r => r.Name), EvaluatePhase, .. settings.Diagnose ? new[] { DiagnosePhase } : []];

    public DemoResult Run()
    {
        var clock = Stopwatch.StartNew();
        using var accelerator = Accelerator.Create(AcceleratorKind.Auto, settings.Threads);
        string folder = outFolder ?? Path.Combine(Path.GetTempPath(), "uio-demo-" + Guid.NewGuid().ToString("N"));
        var uios = new List<(DemoUioRun Run, UioModel Model)>();
        try
        {
            var (weights, fromCache) = LoadOrPretrainBase(accelerator, Path.Combine(folder, "base"));
            using (weights)
            {
                var model = new LlamaModel(weights);
                var ceiling = MeasureCeiling(model);
                foreach (var run in Runs) uios.Add((run, TrainUio(model, run, Path.Combine(folder, "runs", Slug(run.Name)))));
                var (results, distances) = Evaluate(model, uios);
                var diagnostics = settings.Diagnose ? Diagnose(uios) : [];
                return new DemoResult(Methods, results, distances, phases.ToList(), ceiling, stageLosses.ToList(), diagnostics, fromCache,
                    clock.Elapsed, accelerator.Description, settings);
            }
        }
        finally
        {
            foreach (var (_, uio) in uios) uio.Dispose();
            if (outFolder is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The demo's pre-trained base on <paramref name="accelerator"/>: loaded from <paramref name="cacheFolder"/> when its
    /// fingerprint and checksum match, pre-trained (and cached there) otherwise. For runs that share the demo's base and
    /// task (<see cref="Compare.CompareRunner"/>). The caller owns the weights.
    /// </summary>
    public (LlamaWeights Weights, bool FromCache) PrepareBase(Accelerator accelerator, string cacheFolder) => LoadOrPretrainBase(accelerator, cacheFolder);

    /// <summary>The demo's passkey documents (its vocabulary, key length and distractors).</summary>
    public PasskeyDocuments Documents => documents;

    /// <summary>The demo's character vocabulary.</summary>
    public CharVocabulary Vocabulary => vocabulary;

    internal static string Slug(string name) =>
        System.Text.RegularExpressions.Regex.Replace(name.ToLowerInvariant(), "[^a-z0-9]+", "-").Trim('-');

    // ------------------------------------------------------------------ the base

    /// <summary>The base model's shape: a tiny Llama over the character vocabulary, context = one window, first layers local.</summary>
    public LlamaConfig BaseConfig => new()
    {
        Dim = settings.Dim, HiddenDim = settings.HiddenDim, Layers = settings.Layers, Heads = settings.Heads, KvHeads = settings.Heads,
        VocabSize = vocabulary.VocabSize, MaxSeqLen = settings.Window, TiedEmbeddings = true,
        BosId = CharVocabulary.BosId, EosId = CharVocabulary.EosId,
        LocalLayers = settings.LocalLayers, LocalWindow = settings.LocalLayers > 0 ? settings.LocalWindow : 0,
    };

    /// <summary>
    /// Pre-training window <paramref name="index"/> with its targets: an induction drill (the repeats scored) or a
    /// passkey document with the needle and question inside the window (every token scored, or, every other one,
    /// only the answer).
    /// </summary>
    public (int[] Tokens, int[] Targets) PretrainWindow(long index)
    {
        var random = new Data.SeededRandom(settings.Seed, stream: 500_000 + index);
        if (settings.DrillShare > 0 && random.NextDouble() < settings.DrillShare)
            return new InductionDrills(vocabulary).Drill(Seeds.Derive(settings.Seed + 5, index), settings.Window + 1);
        bool bos = random.Next(2) == 0;
        var document = documents.Random(Seeds.Derive(settings.Seed + 7, index), settings.Window + 1, 0, int.MaxValue, bos);
        // Every other window scores only the answer: the copy is one token of 64 and, diluted among the filler,
        // it is learned far more slowly.
        return (document.Tokens, PasskeyTrainingData.Targets(document, answerOnly: index % 2 == 1));
    }

    /// <summary>What identifies a pre-trained base: the recipe and every setting it depends on.</summary>
    public string BaseFingerprint => string.Create(CultureInfo.InvariantCulture,
        $"{BaseRecipe};seed={settings.Seed};window={settings.Window};dim={settings.Dim};layers={settings.Layers};heads={settings.Heads};hidden={settings.HiddenDim};" +
        $"local={settings.LocalLayers}x{settings.LocalWindow};digits={settings.KeyDigits};distractors={settings.DistractorShare};drills={settings.DrillShare};" +
        $"steps={settings.PretrainSteps};batch={settings.PretrainBatch};lr={settings.PretrainLearningRate};threads={settings.Threads}");

    /// <summary>
    /// The base from <paramref name="cacheFolder"/> when its manifest names this fingerprint and the weights file
    /// has the recorded SHA-256; otherwise pre-trained and cached there (<see cref="TinyBase.LoadOrCreate"/>).
    /// </summary>
    private (LlamaWeights Weights, bool FromCache) LoadOrPretrainBase(Accelerator accelerator, string cacheFolder)
    {
        var clock = Stopwatch.StartNew();
        var (weights, fromCache, sha) = TinyBase.LoadOrCreate(accelerator, BaseConfig, cacheFolder, BaseFingerprint, () => Pretrain(accelerator, clock));
        baseSha256 = sha;
        if (fromCache)
        {
            phases.Add(new DemoPhase(PretrainPhase, clock.Elapsed, $"loaded from the cache {cacheFolder} (fingerprint and SHA-256 match; delete the folder to pre-train again)"));
            progress?.Report(new DemoProgress(PretrainPhase, 1, 1, "loaded from the cache"));
        }
        return (weights, fromCache);
    }

    private LlamaWeights Pretrain(Accelerator accelerator, Stopwatch clock)
    {
        int steps = settings.PretrainSteps, batch = settings.PretrainBatch;
        double loss = 0;
        var weights = TinyBase.Pretrain(accelerator, BaseConfig, Seeds.Derive(settings.Seed, 1), steps, batch, settings.PretrainLearningRate, PretrainWindow, (step, l) =>
        {
            loss = l;
            progress?.Report(new DemoProgress(PretrainPhase, step, steps, $"loss {l:F3}"));
        });
        phases.Add(new DemoPhase(PretrainPhase, clock.Elapsed,
            $"{BaseConfig.ParameterCount:N0} parameters ({settings.Layers} layers, d = {settings.Dim}, {LocalDescription}), " +
            $"{steps} steps x {batch} windows of {settings.Window} tokens ({settings.DrillShare:P0} induction drills), final loss {loss:F3}"));
        return weights;
    }

    private string LocalDescription => settings.LocalLayers switch
    {
        0 => "every layer global",
        1 => $"layer 0 local over {settings.LocalWindow} tokens",
        _ => $"layers 0-{settings.LocalLayers - 1} local over {settings.LocalWindow} tokens",
    };

    // ------------------------------------------------------------------ the ceiling

    /// <summary>One-window evaluation documents (unseen seeds) with the needle beyond the local window and the current segment.</summary>
    private List<PasskeyDocument> CeilingDocuments(int count)
    {
        int max = documents.MaxNeedleOffset(settings.Window, bos: true);
        // Needles that start before the question's segment of l tokens: what UIO would hold in memory.
        int questionSegmentStart = settings.Window - settings.SegmentLength;
        int far = Math.Max(1, Math.Min(max, questionSegmentStart - documents.NeedleLength));
        return Enumerable.Range(0, count)
            .Select(i => documents.Compose(new Data.SeededRandom(Seeds.Derive(settings.Seed + 2_000_003, i), 11), settings.Window, 1 + i % far, bos: true))
            .ToList();
    }

    private DemoCeiling MeasureCeiling(LlamaModel model)
    {
        var clock = Stopwatch.StartNew();
        var prompts = CeilingDocuments(100);
        int total = prompts.Count * (2 + model.Config.Layers), done = 0;
        double Accuracy(LlamaModel m)
        {
            int correct = 0;
            foreach (var d in prompts)
            {
                if (BaseAnswer(m, d) == d.Key) correct++;
                progress?.Report(new DemoProgress(CeilingPhase, ++done, total, "in-window accuracy"));
            }
            return (double)correct / prompts.Count;
        }
        double inWindow = Accuracy(model);
        // Hide the far part from layer 0's keys: layer 0 (at least) sees only the question's own segment.
        var c = model.Config;
        var hiddenConfig = c with
        {
            LocalLayers = Math.Max(1, c.LocalLayers),
            LocalWindow = c.LocalLayers > 0 ? Math.Min(c.LocalWindow, settings.SegmentLength) : settings.SegmentLength,
        };
        double layer0Hidden = Accuracy(new LlamaModel(model.Weights.WithConfig(hiddenConfig), model.Rope));
        // Where the copy happens: zero one layer's attention output at a time.
        var ablation = new List<double>();
        for (int layer = 0; layer < c.Layers; layer++)
        {
            var wo = model.Weights.Layers[layer].Wo;
            var saved = wo.ToArray();
            model.Weights.Unfreeze();
            wo.CopyFrom(new float[saved.Length]);
            ablation.Add(Accuracy(new LlamaModel(model.Weights, model.Rope)));
            model.Weights.Unfreeze();
            wo.CopyFrom(saved);
        }
        model.Weights.Freeze();
        var ceiling = new DemoCeiling(inWindow, layer0Hidden, prompts.Count, ablation);
        phases.Add(new DemoPhase(CeilingPhase, clock.Elapsed,
            $"in-window {inWindow:P0}, far part hidden from layer-0 keys {layer0Hidden:P0} (needed: {DemoCeiling.Required:P0}; {prompts.Count} prompts); " +
            $"without layer L's attention: {string.Join(", ", ablation.Select((a, l) => $"L{l} {a:P0}"))}"));
        return ceiling;
    }

    // ------------------------------------------------------------------ UIO training

    /// <summary>The training stream of one curriculum stage or far-regime run.</summary>
    public PasskeyTrainingData UioData(DemoUioRun run, int stage)
    {
        var (min, max) = run.Regime == DemoRegime.Curriculum ? (1, settings.Curriculum[stage]) : (run.ReservoirSize + 1, settings.Curriculum[^1]);
        return new PasskeyTrainingData(documents, Seeds.Derive(settings.Seed, 100 + stage), settings.SegmentLength, min, max, settings.ExtraSegments);
    }

    private EstimatorFactory Estimators(DemoUioRun run) => run.Estimator switch
    {
        DemoEstimator.Tbptt => _ => new TruncatedBptt(run.ReservoirSize),
        DemoEstimator.Unbiased => seed => new UnbiasedIncremental(run.ReservoirSize, seed),
        _ => _ => new FullBptt(),
    };

    /// <summary>The base's fingerprint and the checksum of its weights (known once <see cref="PrepareBase"/> ran).</summary>
    public string BaseIdentity => $"{BaseFingerprint};base-sha256={baseSha256}";

    /// <summary>What identifies a trained UIO run: the base's fingerprint and checksum, the run and every UIO setting it depends on.</summary>
    public string RunFingerprint(DemoUioRun run) => string.Create(CultureInfo.InvariantCulture,
        $"{BaseIdentity};run={run.Name};l={settings.SegmentLength};n={settings.MemoryTokens};rank={settings.Rank};alpha={settings.Alpha};" +
        $"lr={settings.UioLearningRate};batch={settings.UioBatch};curriculum={string.Join('-', settings.Curriculum)};stage={settings.StageSteps};far={settings.FarSteps};" +
        $"extra={settings.ExtraSegments};workers={UioWorkers}");

    /// <summary>
    /// A UIO run's memory: loaded from <paramref name="folder"/> when its manifest names this run's fingerprint and
    /// the adapter loads (so a re-run, or an ablation, trains only what it has not trained yet), trained otherwise.
    /// </summary>
    private UioModel TrainUio(LlamaModel model, DemoUioRun run, string folder)
    {
        var clock = Stopwatch.StartNew();
        string manifest = Path.Combine(folder, RunManifest), adapter = Path.Combine(folder, "adapter");
        if (TryLoadCachedRun(model, run, manifest, adapter) is { } cached)
        {
            phases.Add(new DemoPhase(run.Name, clock.Elapsed, $"loaded from the cache {folder} (fingerprint matches; delete the folder to train again); " + RunSummary(run)));
            progress?.Report(new DemoProgress(run.Name, 1, 1, "loaded from the cache"));
            return cached;
        }
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        // The evaluation marks lengths past the budget and reads them with extrapolation; training documents
        // were checked to fit it (DemoSettings.Validate).
        var uio = new UioModel(model, settings.UioConfig(run) with { AllowExtrapolation = true }, Seeds.Derive(settings.Seed, 3));
        try
        {
            // Curriculum: one trainer per stage on the same adapters (warm start); far: one trainer for all the steps.
            int stages = run.Regime == DemoRegime.Curriculum ? settings.Curriculum.Length : 1;
            int stepsPerStage = run.Regime == DemoRegime.Curriculum ? settings.StageSteps : settings.FarSteps;
            int total = stages * stepsPerStage, before = 0;
            for (int stage = 0; stage < stages; stage++)
            {
                var data = UioData(run, stage);
                var options = new TrainingOptions
                {
                    TotalSteps = stepsPerStage, DocumentsPerStep = settings.UioBatch, Workers = UioWorkers, PeakLearningRate = settings.UioLearningRate, MinLearningRate = settings.UioLearningRate / 10,
                    WarmupSteps = Math.Max(1, stepsPerStage / 20), Seed = settings.Seed + stage, WeightDecay = 0f, BaseModelNameOrPath = "uio-demo-base",
                };
                var recent = new Queue<double>();
                var callbacks = new TrainerCallbacks
                {
                    Progress = new SyncProgress<TrainingProgress>(p =>
                    {
                        recent.Enqueue(p.Loss);
                        if (recent.Count > 50) recent.Dequeue();
                        progress?.Report(new DemoProgress(run.Name, before + p.Step, total, $"distance {data.MinDistance}-{data.MaxDistance}, loss {recent.Average():F3}"));
                    }),
                };
                using (var trainer = new Trainer(uio, data, Estimators(run), options, Path.Combine(folder, $"stage-{stage}"), callbacks))
                    trainer.Run();
                stageLosses.Add(new DemoStageLoss(run.Name, data.MaxDistance, stepsPerStage, recent.Average()));
                before += stepsPerStage;
            }
            UioAdapter.Save(uio, adapter, "uio-demo-base");
            var losses = stageLosses.Where(s => s.Method == run.Name).Select(s => new JsonObject
            {
                ["max_distance"] = s.MaxDistance, ["steps"] = s.Steps, ["loss"] = s.Loss,
            }).ToArray<JsonNode?>();
            string text = new JsonObject { ["fingerprint"] = RunFingerprint(run), ["stage_losses"] = new JsonArray(losses) }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
            AtomicFile.Write(manifest, stream => stream.Write(Encoding.UTF8.GetBytes(text)));
            phases.Add(new DemoPhase(run.Name, clock.Elapsed, RunSummary(run)));
            return uio;
        }
        catch
        {
            uio.Dispose();
            throw;
        }
    }

    private const string RunManifest = "run.json";

    /// <summary>Documents of a UIO step computed side by side: one per core (the results depend on this number).</summary>
    private int UioWorkers => Math.Min(settings.UioBatch, settings.Threads > 0 ? settings.Threads : Environment.ProcessorCount);

    private string RunSummary(DemoUioRun run)
    {
        var losses = stageLosses.Where(s => s.Method == run.Name).ToList();
        return run.Regime == DemoRegime.Curriculum
            ? $"curriculum {string.Join(" -> ", settings.Curriculum)} segments back, {settings.StageSteps} steps each; answer loss per stage " +
              string.Join(" / ", losses.Select(s => s.Loss.ToString("F2", CultureInfo.InvariantCulture)))
            : $"needle {run.ReservoirSize + 1}-{settings.Curriculum[^1]} segments back, {settings.FarSteps} steps; final answer loss {losses[^1].Loss:F2}";
    }

    private UioModel? TryLoadCachedRun(LlamaModel model, DemoUioRun run, string manifest, string adapter)
    {
        if (!File.Exists(manifest)) return null;
        UioModel? uio = null;
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(manifest));
            if (json.RootElement.GetProperty("fingerprint").GetString() != RunFingerprint(run)) return null;
            var losses = json.RootElement.GetProperty("stage_losses").EnumerateArray()
                .Select(e => new DemoStageLoss(run.Name, e.GetProperty("max_distance").GetInt32(), e.GetProperty("steps").GetInt32(), e.GetProperty("loss").GetDouble()))
                .ToList();
            if (losses.Count == 0) return null;
            uio = UioAdapter.Load(model, adapter, c => c with { AllowExtrapolation = true });
            stageLosses.AddRange(losses);
            return uio;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ModelFormatException or IOException)
        {
            uio?.Dispose();
            return null;   // a damaged or foreign run is trained again, never trusted
        }
    }

    // ------------------------------------------------------------------ evaluation

    /// <summary>The length x depth prompts: for every length and depth, <see cref="DemoSettings.Trials"/> documents (seeds training never used).</summary>
    public IEnumerable<(int Windows, double Depth, PasskeyDocument Document)> EvaluationDocuments()
    {
        int index = 0;
        foreach (int windows in settings.EvalWindows)
            foreach (double depth in settings.Depths)
                for (int trial = 0; trial < settings.Trials; trial++)
                    yield return (windows, depth, documents.AtDepth(Seeds.Derive(settings.Seed + 1_000_003, index++), windows * settings.Window, depth));
    }

    /// <summary>The distance prompts: the needle d segments before the question's segment, in documents of d + 1 segments.</summary>
    public IEnumerable<(int Distance, PasskeyDocument Document)> DistanceDocuments()
    {
        int index = 0;
        foreach (int distance in settings.EvalDistances)
            for (int trial = 0; trial < settings.DistanceTrials; trial++)
                yield return (distance, PasskeyTrainingData.AtDistance(documents, Seeds.Derive(settings.Seed + 3_000_017, index++), settings.SegmentLength, distance + 1, distance));
    }

    private (List<DemoAccuracy>, List<DemoDistanceAccuracy>) Evaluate(LlamaModel model, List<(DemoUioRun Run, UioModel Model)> uios)
    {
        var clock = Stopwatch.StartNew();
        var answerers = new List<(string Method, Func<PasskeyDocument, string> Answer)>
        {
            (BaseMethod, d => BaseAnswer(model, d)),
            (StreamingMethod, d => StreamingAnswer(model, d)),
        };
        answerers.AddRange(uios.Select(u => (u.Run.Name, (Func<PasskeyDocument, string>)(d => UioAnswer(u.Model, d)))));
        var prompts = EvaluationDocuments().ToList();
        var distancePrompts = DistanceDocuments().ToList();
        int total = (prompts.Count + distancePrompts.Count) * answerers.Count, done = 0;
        var results = new List<DemoAccuracy>();
        foreach (var group in prompts.GroupBy(p => (p.Windows, p.Depth)))
            foreach (var (method, answer) in answerers)
            {
                int correct = 0, trials = 0;
                foreach (var (_, _, document) in group)
                {
                    if (answer(document) == document.Key) correct++;
                    trials++;
                    progress?.Report(new DemoProgress(EvaluatePhase, ++done, total, $"{method}, {group.Key.Windows} windows"));
                }
                results.Add(new DemoAccuracy(method, group.Key.Windows, group.Key.Windows * settings.Window, group.Key.Depth, correct, trials,
                    settings.BeyondBudget(group.Key.Windows)));
            }
        var distances = new List<DemoDistanceAccuracy>();
        foreach (var group in distancePrompts.GroupBy(p => p.Distance))
            foreach (var (method, answer) in answerers)
            {
                int correct = 0, trials = 0;
                foreach (var (_, document) in group)
                {
                    if (answer(document) == document.Key) correct++;
                    trials++;
                    progress?.Report(new DemoProgress(EvaluatePhase, ++done, total, $"{method}, {group.Key} segments back"));
                }
                distances.Add(new DemoDistanceAccuracy(method, group.Key, (group.Key + 1) * settings.SegmentLength, correct, trials));
            }
        phases.Add(new DemoPhase(EvaluatePhase, clock.Elapsed,
            $"{prompts.Count} length x depth prompts and {distancePrompts.Count} distance prompts x {answerers.Count} methods (seeds no training used)"));
        return (results, distances);
    }

    private GenerationOptions Greedy => new() { MaxNewTokens = documents.KeyTokens, Temperature = 0, StopTokens = [] };

    /// <summary>The base model reads only the last window (minus room for the answer) of the prompt.</summary>
    private string BaseAnswer(LlamaModel model, PasskeyDocument document)
    {
        var prompt = document.Prompt;
        int keep = Math.Min(prompt.Length, settings.Window - documents.KeyTokens);
        return vocabulary.Decode(new Generator(model).Generate(prompt[^keep..], Greedy).Tokens);
    }

    private string StreamingAnswer(LlamaModel model, PasskeyDocument document)
    {
        using var streaming = new StreamingLlm(model, settings.Window - settings.StreamingSinks, settings.StreamingSinks);
        streaming.Feed(document.Prompt);
        var generated = new int[documents.KeyTokens];
        for (int i = 0; i < generated.Length; i++)
        {
            generated[i] = Sampler.ArgMax(streaming.LastLogits);
            if (i + 1 < generated.Length) streaming.Feed([generated[i]]);
        }
        return vocabulary.Decode(generated);
    }

    private string UioAnswer(UioModel uio, PasskeyDocument document)
    {
        using var session = new UioSession(uio);
        session.Prefill(document.Prompt);
        return vocabulary.Decode(session.Generate(Greedy).Tokens);
    }

    // ------------------------------------------------------------------ diagnostics

    private List<DemoDiagnostics> Diagnose(List<(DemoUioRun Run, UioModel Model)> uios)
    {
        var clock = Stopwatch.StartNew();
        int distance = Math.Min(4, settings.Curriculum[^1]), prompts = Math.Min(40, settings.DistanceTrials * 2);
        var list = new List<DemoDiagnostics>();
        int done = 0, total = uios.Count * prompts;
        foreach (var (run, uio) in uios)
        {
            var attention = uio.Base.Blocks.Select(b => b.Attention).ToArray();
            var mass = new double[attention.Length];
            int own = 0, donor = 0;
            for (int i = 0; i < prompts; i++)
            {
                var a = PasskeyTrainingData.AtDistance(documents, Seeds.Derive(settings.Seed + 4_000_037, i), settings.SegmentLength, distance + 1, distance);
                var b = PasskeyTrainingData.AtDistance(documents, Seeds.Derive(settings.Seed + 5_000_011, i), settings.SegmentLength, distance + 1, distance);
                // Attention mass on memory at the answer position, per layer (the last decoder call's last query).
                var probes = new double[attention.Length];
                for (int l = 0; l < attention.Length; l++)
                {
                    int layer = l;
                    attention[l].Observer = p => probes[layer] = p.Mask.PrefixLength == 0 ? 0 : p.LastQueryMassOn(p.Mask.PrefixLength).Average();
                }
                try
                {
                    using var session = new UioSession(uio);
                    session.Prefill(b.Prompt);
                }
                finally
                {
                    foreach (var att in attention) att.Observer = null;
                }
                for (int l = 0; l < mass.Length; l++) mass[l] += probes[l] / prompts;
                // Memory swap: memories from document a, the question's segment from document b.
                int l0 = settings.SegmentLength * distance;
                using (var session = new UioSession(uio))
                {
                    using (var tape = new Tape(uio.Accelerator, "swap"))
                    using (tape.NoGrad())
                        session.AppendMemory(uio.Compress(tape, a.Tokens.AsSpan(0, l0)));
                    session.Feed(b.Prompt[l0..]);
                    string answer = vocabulary.Decode(session.Generate(Greedy).Tokens);
                    if (answer == b.Key) own++;
                    if (answer == a.Key) donor++;
                }
                progress?.Report(new DemoProgress(DiagnosePhase, ++done, total, run.Name));
            }
            list.Add(new DemoDiagnostics(run.Name, mass, prompts, own, donor));
        }
        phases.Add(new DemoPhase(DiagnosePhase, clock.Elapsed, $"attention mass on memory and memory swap, {prompts} prompts with the needle {distance} segments back, per UIO memory"));
        return list;
    }
}
