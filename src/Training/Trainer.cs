using System.Diagnostics;
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Uio;
using UioLlm.Training.Estimators;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.Uio;
using UioLlm.Training.Optim;

namespace UioLlm.Training;

/// <summary>
/// Trains any <see cref="ITrainableMethod"/> with AdamW: a <see cref="UioModel"/>'s adapter (encoder LoRA, transfer
/// LoRA, memory embedding) through UIO's segment loop and estimators (<see cref="UioTrainable"/>), or any other
/// trained method of <see cref="TrainableMethods"/>. One optimizer step (<see cref="TrainStep"/>):
/// <list type="number">
/// <item>zero the gradients; derive the step's seed from <see cref="Seeds.Derive"/>(seed, step) and each document's
/// seed from it (UIO makes the document's estimator from it);</item>
/// <item>accumulate k = <see cref="TrainingOptions.DocumentsPerStep"/> documents: each adds the gradient of its
/// loss, a sum over units (UIO: d(sum_t J_t)/dTheta, where J_t is the mean cross-entropy of segment t's scored
/// tokens);</item>
/// <item>scale the sum by 1 / (total units of the k documents; UIO: the segments that score something), so the
/// reported loss is the mean per unit over the step;</item>
/// <item>clip the global norm to <see cref="TrainingOptions.MaxGradNorm"/>; take the AdamW step at the
/// scheduled learning rate; zero the gradients.</item>
/// </list>
/// <see cref="Run"/> repeats steps, evaluates and writes checkpoints into the run folder (see
/// <see cref="Checkpoint"/>) and logs every step (see <see cref="MetricsLog"/>); <c>Resume</c> continues
/// a run from a checkpoint bit for bit as if it had never stopped. The trainer does not own the model or method
/// it is given (only the UIO wrapper it makes itself).
/// </summary>
public sealed class Trainer : IDisposable
{
    private readonly ITrainableMethod method;
    private readonly bool ownsMethod;
    private readonly ITrainingData data;
    private readonly TrainerCallbacks callbacks;
    private readonly AdamW optimizer;
    private readonly WarmupCosineSchedule schedule;
    private readonly Var[] parameters;
    private readonly List<ITrainableMethod> replicas = [];   // the workers' copies of the method (TrainingOptions.Workers)
    private MetricsLog? metrics;
    private double elapsedBeforeSession;
    private double sessionSeconds;
    private int sessionSteps;
    private int lastEvaluatedStep = -1;
    private (int Step, string Folder)? lastCheckpoint;
    private bool disposed;

    /// <summary>Starts a new run in <paramref name="runFolder"/> (which must not hold a run's metrics yet).</summary>
    /// <param name="model">The model whose adapter is trained (not owned).</param>
    /// <param name="data">Where the documents come from, from its current position.</param>
    /// <param name="estimators">Makes each step's gradient estimator from that step's seed.</param>
    public Trainer(UioModel model, ITrainingData data, EstimatorFactory estimators, TrainingOptions options, string runFolder,
        TrainerCallbacks? callbacks = null)
        : this(Wrap(model, estimators), ownsMethod: true, data, options, runFolder, callbacks, resumeStep: null)
    {
    }

    /// <summary>Starts a new run of any trainable method in <paramref name="runFolder"/> (which must not hold a run's metrics yet).</summary>
    /// <param name="method">The method whose parameters are trained (not owned).</param>
    /// <param name="data">Where the documents come from, from its current position.</param>
    public Trainer(ITrainableMethod method, ITrainingData data, TrainingOptions options, string runFolder, TrainerCallbacks? callbacks = null)
        : this(method, ownsMethod: false, data, options, runFolder, callbacks, resumeStep: null)
    {
    }

    private static UioTrainable Wrap(UioModel model, EstimatorFactory estimators)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(estimators);
        return new UioTrainable(model, estimators);
    }

    private Trainer(ITrainableMethod method, bool ownsMethod, ITrainingData data, TrainingOptions options, string runFolder,
        TrainerCallbacks? callbacks, int? resumeStep)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(runFolder);
        options.Validate();
        this.method = method;
        this.ownsMethod = ownsMethod;
        this.data = data;
        this.callbacks = callbacks ?? new TrainerCallbacks();
        Options = options;
        RunFolder = Path.GetFullPath(runFolder);
        schedule = options.Schedule();
        // Folders of saves or prunes that were interrupted (a kill during a save) are never checkpoints: remove them.
        Checkpoint.CleanTemporaryFolders(RunFolder);
        // A new run in a folder whose earlier run never completed its first checkpoint starts that run over
        // (its metrics lines are dropped); a folder holding a checkpoint must be resumed instead.
        if (resumeStep is null && !Checkpoint.HasCheckpoints(RunFolder) && File.Exists(Path.Combine(RunFolder, MetricsLog.JsonFileName)))
            resumeStep = 0;
        parameters = method.Parameters.Select(p => p.Parameter).ToArray();
        optimizer = new AdamW(method.Parameters.ToList(), options.Optimizer());
        try
        {
            // With data parallelism only one process writes the run folder's files.
            if (this.callbacks.GradientReducer is not { WritesRunFiles: false }) metrics = new MetricsLog(RunFolder, resumeStep);
        }
        catch
        {
            optimizer.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Continues a run: <paramref name="path"/> is a checkpoint folder, or a run folder (its newest complete
    /// checkpoint is taken). The adapter, optimizer moments and step count, data position and options are
    /// restored into <paramref name="model"/> and <paramref name="data"/>; the run folder is the checkpoint's.
    /// </summary>
    /// <exception cref="CheckpointFormatException">The checkpoint is incomplete or damaged, or was made for a model with other UIO settings.</exception>
    public static Trainer Resume(string path, UioModel model, ITrainingData data, EstimatorFactory estimators, TrainerCallbacks? callbacks = null) =>
        Resume(path, Wrap(model, estimators), ownsMethod: true, data, callbacks);

    /// <summary>
    /// Continues a run of any trainable method (see the UIO overload): <paramref name="method"/> must have the settings
    /// the checkpoint's adapter was saved with; its parameters, the optimizer, data position and options are restored.
    /// </summary>
    /// <exception cref="CheckpointFormatException">The checkpoint is incomplete or damaged, or was made for another method or other settings.</exception>
    public static Trainer Resume(string path, ITrainableMethod method, ITrainingData data, TrainerCallbacks? callbacks = null) =>
        Resume(path, method, ownsMethod: false, data, callbacks);

    private static Trainer Resume(string path, ITrainableMethod method, bool ownsMethod, ITrainingData data, TrainerCallbacks? callbacks)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(data);
        string folder = Checkpoint.Locate(path);
        int step = Checkpoint.Verify(folder);
        var state = Checkpoint.ReadState(folder);
        if (state.Step != step)
            throw new CheckpointFormatException(folder, $"trainer state records step {state.Step} but the manifest step {step}");
        var trainer = new Trainer(method, ownsMethod, data, state.Options, Checkpoint.RunFolderOf(folder), callbacks, resumeStep: step);
        try
        {
            trainer.Restore(folder, state);
            return trainer;
        }
        catch
        {
            trainer.Dispose();
            throw;
        }
    }

    public TrainingOptions Options { get; }

    public string RunFolder { get; }

    /// <summary>Optimizer steps completed in the whole run.</summary>
    public int Step { get; private set; }

    /// <summary>Tokens scored in the whole run.</summary>
    public long TokensSeen { get; private set; }

    public UioModel Model => (method as UioTrainable)?.Model
        ?? throw new InvalidOperationException($"this trainer trains the method '{method.Name}', not a UIO model (see Method)");

    /// <summary>The method trained.</summary>
    public ITrainableMethod Method => method;

    public AdamW Optimizer => optimizer;

    public WarmupCosineSchedule Schedule => schedule;

    /// <summary>Training time of the whole run so far (time inside steps, all sessions).</summary>
    public TimeSpan Elapsed => TimeSpan.FromSeconds(elapsedBeforeSession + sessionSeconds);

    /// <summary>
    /// Steps until <paramref name="stopAfterStep"/> (default: the total), the run completes, or
    /// <paramref name="cancellation"/> is signalled (checked between steps). Evaluates every
    /// <see cref="TrainingOptions.EvalEvery"/> steps and once more when the run completes (when an evaluation is
    /// given), checkpoints every <see cref="TrainingOptions.CheckpointEvery"/> steps, and always leaves a
    /// checkpoint of the step it stopped at.
    /// </summary>
    public TrainingRunResult Run(int? stopAfterStep = null, CancellationToken cancellation = default)
    {
        ThrowIfDisposed();
        int target = Options.TotalSteps;
        if (stopAfterStep is int stop)
        {
            if (stop < Step) throw new ArgumentOutOfRangeException(nameof(stopAfterStep), stop, $"Run: the run is already at step {Step}");
            target = Math.Min(stop, target);
        }
        while (Step < target && !cancellation.IsCancellationRequested)
        {
            TrainStep();
            if (Options.EvalEvery > 0 && Step % Options.EvalEvery == 0) Evaluate();
            if (Options.CheckpointEvery > 0 && Step % Options.CheckpointEvery == 0) SaveCheckpoint();
        }
        bool completed = Step == Options.TotalSteps;
        if (completed && lastEvaluatedStep != Step) Evaluate();
        string folder = lastCheckpoint is { } last && last.Step == Step ? last.Folder : SaveCheckpoint();
        return new TrainingRunResult(Step, completed, folder);
    }

    /// <summary>One optimizer step over the next k documents (see the class summary).</summary>
    /// <exception cref="InvalidOperationException">The run is complete, or the loss or gradient is not finite (the parameters are then left unchanged).</exception>
    public StepResult TrainStep()
    {
        ThrowIfDisposed();
        if (Step >= Options.TotalSteps) throw new InvalidOperationException($"TrainStep: the run is complete ({Step} of {Options.TotalSteps} steps)");
        var clock = Stopwatch.StartNew();
        int step = Step + 1;
        var kernels = method.Base.Accelerator.Kernels;

        // Gradients are zeroed here too, in case an evaluation between steps left some behind.
        foreach (var p in parameters) p.ZeroGrad();
        var grads = parameters.Select(p => p.Grad!).ToArray();
        var reducer = callbacks.GradientReducer;
        int stepSeed = Seeds.Derive(Options.Seed, step);
        double lossSum = 0;
        int segments = 0, tokens = 0;
        int workers = reducer is null ? Math.Min(Options.Workers, Options.DocumentsPerStep) : 1;
        if (workers > 1) (lossSum, segments, tokens) = AccumulateSideBySide(step, stepSeed, workers, grads);
        else
            for (int d = 0; d < Options.DocumentsPerStep; d++)
            {
                // Every process draws every document (data positions stay equal); each computes its share. Each
                // document has its own estimator, seeded from (step seed, d), so a document's gradient does not depend
                // on which process computes it (document 0 keeps the step seed).
                var (document, targets) = NextDocument();
                if (reducer is not null && !reducer.Computes(d)) continue;
                var result = AccumulateDocument(method, step, stepSeed, d, document, targets);
                lossSum += result.Loss;
                segments += result.Units;
                tokens += result.Tokens;
                reducer?.DocumentDone(d, grads, new StepTotals(result.Loss, result.Units, result.Tokens));
            }
        if (reducer is not null)
            (lossSum, segments, tokens) = reducer.Reduce(grads, new StepTotals(lossSum, segments, tokens), Options.DocumentsPerStep);

        if (segments == 0) throw new InvalidOperationException($"step {step}: no target was scored in the step's documents");
        float perToken = 1f / segments;
        foreach (var g in grads) kernels.Scale(g, perToken, g);
        float norm = GradientClipping.ClipGlobalNorm(kernels, grads, Options.MaxGradNorm);
        double loss = lossSum / segments;
        if (!double.IsFinite(loss) || !float.IsFinite(norm))
        {
            string diagnosis = DiagnoseNonFinite(step, loss, norm);
            foreach (var p in parameters) p.ZeroGrad();
            throw new NonFiniteException(diagnosis);
        }

        float lr = schedule.At(step);
        optimizer.Step(lr);
        foreach (var p in parameters)
        {
            int bad = NonFinite.FirstIndex(p.Value);
            if (bad >= 0)
                throw new NonFiniteException(
                    $"step {step}: the AdamW update (learning rate {lr:G3}) made parameter group '{p.Name}' non-finite at index {bad}; the base weights and the gradient were finite, so the update itself overflowed: lower the learning rate (the last checkpoint holds the parameters before it)");
        }
        foreach (var p in parameters) p.ZeroGrad();

        method.Base.Accelerator.Synchronize();
        double seconds = clock.Elapsed.TotalSeconds;
        Step = step;
        TokensSeen += tokens;
        sessionSeconds += seconds;
        sessionSteps++;
        var stepResult = new StepResult(step, loss, lr, norm, norm > Options.MaxGradNorm, Options.DocumentsPerStep, tokens, seconds);
        if (WritesRunFiles) Metrics.WriteStep(stepResult, Elapsed);
        callbacks.Progress?.Report(Progress(stepResult));
        return stepResult;
    }

    /// <summary>The next document and its targets (untargeted data: every next token).</summary>
    private (int[] Document, int[] Targets) NextDocument()
    {
        if (data is ITargetedTrainingData targeted) return targeted.NextWithTargets();
        var document = data.Next();
        return (document, document.Length == 0 ? [] : document[1..]);
    }

    /// <summary>
    /// Document <paramref name="d"/> of a step through <paramref name="on"/> (the method or a worker's copy). Each
    /// document has its own seed, (step seed, d), so its gradient does not depend on who computes it (document 0 keeps
    /// the step seed).
    /// </summary>
    private static DocumentLoss AccumulateDocument(ITrainableMethod on, int step, int stepSeed, int d, int[] document, int[] targets)
    {
        var result = on.Accumulate(document, targets, d == 0 ? stepSeed : Seeds.Derive(stepSeed, d));
        if (result.Units < 0 || result.Tokens < 0)
            throw new InvalidOperationException($"step {step}: method '{on.Name}' reported {result.Units} units and {result.Tokens} tokens for document {d}");
        return result;
    }

    /// <summary>
    /// The step's documents on <paramref name="workers"/> threads: worker w takes documents w, w + workers, ...
    /// on the model (w = 0) or on its own copy of the adapter (values copied from the model first); then each copy's
    /// gradients are added to the model's, copy by copy. Totals are summed in document order.
    /// </summary>
    private (double Loss, int Segments, int Tokens) AccumulateSideBySide(int step, int stepSeed, int workers, Tensor[] grads)
    {
        var kernels = method.Base.Accelerator.Kernels;
        while (replicas.Count < workers - 1)
        {
            var replica = method.CreateReplica();
            if (replica is null) break;
            replicas.Add(replica);
        }
        workers = Math.Min(workers, replicas.Count + 1);
        for (int r = 0; r < workers - 1; r++)
        {
            var copy = replicas[r].Parameters.Select(p => p.Parameter).ToArray();
            for (int i = 0; i < parameters.Length; i++)
            {
                kernels.Copy(parameters[i].Value, copy[i].Value);
                copy[i].ZeroGrad();
            }
        }
        var documents = Enumerable.Range(0, Options.DocumentsPerStep).Select(_ => NextDocument()).ToArray();
        var results = new DocumentLoss[documents.Length];
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
        {
            // One document per core: the kernels stay on the worker's thread (the pool's helpers would only contend).
            using var alone = KernelThreads.ThisThreadOnly();
            var on = w == 0 ? method : replicas[w - 1];
            for (int d = w; d < documents.Length; d += workers)
                results[d] = AccumulateDocument(on, step, stepSeed, d, documents[d].Document, documents[d].Targets);
        });
        for (int r = 0; r < workers - 1; r++)
        {
            var copy = replicas[r].Parameters.Select(p => p.Parameter).ToArray();
            for (int i = 0; i < parameters.Length; i++)
            {
                kernels.Add(grads[i], copy[i].Grad!, grads[i]);
                copy[i].ZeroGrad();
            }
        }
        return (results.Sum(r => r.Loss), results.Sum(r => r.Units), results.Sum(r => r.Tokens));
    }

    /// <summary>Runs the evaluation callback (if any) at the current step and logs its metrics.</summary>
    public void Evaluate()
    {
        ThrowIfDisposed();
        if (callbacks.Evaluate is null) return;
        var values = callbacks.Evaluate(method, Step) ?? throw new InvalidOperationException($"step {Step}: the evaluation returned null");
        if (WritesRunFiles) Metrics.WriteEval(Step, values);
        lastEvaluatedStep = Step;
    }

    /// <summary>Writes a checkpoint of the current step (see <see cref="Checkpoint"/>), prunes old ones, and returns its folder.</summary>
    public string SaveCheckpoint()
    {
        ThrowIfDisposed();
        if (!WritesRunFiles)
        {
            // Another process writes it; this one records where it will be.
            lastCheckpoint = (Step, Checkpoint.FolderFor(RunFolder, Step));
            return lastCheckpoint.Value.Folder;
        }
        var state = new TrainerState
        {
            FormatVersion = TrainerState.CurrentFormatVersion,
            Step = Step,
            Options = Options,
            DataPosition = data.Position,
            ElapsedSeconds = Elapsed.TotalSeconds,
            TokensSeen = TokensSeen,
        };
        string folder = Checkpoint.Write(RunFolder, Step, temp =>
        {
            method.SaveAdapter(Path.Combine(temp, Checkpoint.AdapterFolderName), Options.BaseModelNameOrPath);
            optimizer.Save(Path.Combine(temp, Checkpoint.OptimizerFileName));
            Checkpoint.WriteState(temp, state);
        });
        lastCheckpoint = (Step, folder);
        PruneCheckpoints();
        callbacks.CheckpointSaved?.Invoke(folder);
        return folder;
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        optimizer.Dispose();
        foreach (var replica in replicas) replica.Dispose();
        if (ownsMethod) method.Dispose();
        metrics?.Dispose();
        metrics = null;
    }

    /// <summary>False on the processes of a data-parallel run that leave the run folder to another (see <see cref="IGradientReducer"/>).</summary>
    private bool WritesRunFiles => callbacks.GradientReducer is not { WritesRunFiles: false };

    private MetricsLog Metrics => metrics ?? throw new ObjectDisposedException(nameof(Trainer));

    /// <summary>Loads a verified checkpoint's adapter, optimizer state and positions into this trainer.</summary>
    private void Restore(string folder, TrainerState state)
    {
        string adapterFolder = Path.Combine(folder, Checkpoint.AdapterFolderName);
        try
        {
            method.LoadAdapter(adapterFolder);
        }
        catch (ModelFormatException e)
        {
            throw new CheckpointFormatException(adapterFolder, $"adapter cannot be loaded: {e.Message}", e);
        }
        optimizer.Load(Path.Combine(folder, Checkpoint.OptimizerFileName));
        if (optimizer.StepCount != state.Step)
            throw new CheckpointFormatException(folder, $"optimizer state is at step {optimizer.StepCount}, the trainer state at step {state.Step}");
        try
        {
            data.Position = state.DataPosition;
        }
        catch (ArgumentException e)
        {
            throw new CheckpointFormatException(Path.Combine(folder, Checkpoint.StateFileName),
                $"data_position (epoch {state.DataPosition.Epoch}, index {state.DataPosition.Index}) does not fit the training data: {e.Message}", e);
        }
        Step = state.Step;
        TokensSeen = state.TokensSeen;
        elapsedBeforeSession = state.ElapsedSeconds;
        lastCheckpoint = (state.Step, folder);
        // A completed run had its final evaluation before its final checkpoint: do not repeat it.
        if (Step == Options.TotalSteps) lastEvaluatedStep = Step;
    }

    /// <summary>
    /// Says why a step's loss or gradient norm is not finite: the base model's weights (damaged or diverged
    /// weights: the run cannot continue on them), the trainable parameters (an earlier update), or else the
    /// gradient of the first parameter group that holds a NaN or an infinity (the forward or backward pass overflowed).
    /// </summary>
    private string DiagnoseNonFinite(int step, double loss, float norm)
    {
        string what = $"step {step}: the loss ({loss}) or gradient norm ({norm}) is not finite";
        foreach (var (name, tensor) in method.Base.Weights.Named())
        {
            int bad = NonFinite.FirstIndex(tensor);
            if (bad >= 0) return $"{what}: the base model's weights hold a non-finite value (tensor '{name}', index {bad}); the base model is damaged, not the update";
        }
        foreach (var p in parameters)
        {
            int bad = NonFinite.FirstIndex(p.Value);
            if (bad >= 0) return $"{what}: parameter group '{p.Name}' already holds a non-finite value (index {bad}), left by an earlier update; resume from an earlier checkpoint with a lower learning rate";
        }
        foreach (var p in parameters)
        {
            int bad = p.Grad is null ? -1 : NonFinite.FirstIndex(p.Grad);
            if (bad >= 0) return $"{what}: the gradient of parameter group '{p.Name}' is non-finite (index {bad}) while the weights are finite: the forward or backward pass overflowed (the model diverged; try a lower learning rate, current peak {Options.PeakLearningRate:G3})";
        }
        return $"{what}: the weights and gradients are finite, so the loss itself overflowed (the model diverged; try a lower learning rate, current peak {Options.PeakLearningRate:G3})";
    }

    private TrainingProgress Progress(StepResult r)
    {
        double meanStep = sessionSeconds / sessionSteps;
        return new TrainingProgress(r.Step, Options.TotalSteps, r.Loss, r.LearningRate, r.GradNorm,
            r.Seconds > 0 ? r.Tokens / r.Seconds : 0, Elapsed, TimeSpan.FromSeconds(meanStep * (Options.TotalSteps - r.Step)));
    }

    /// <summary>Deletes all but the newest <see cref="TrainingOptions.KeepCheckpoints"/> checkpoints (and never the one just written).</summary>
    private void PruneCheckpoints()
    {
        if (Options.KeepCheckpoints == 0) return;
        var all = Checkpoint.List(RunFolder);
        foreach (var (step, folder) in all.Take(Math.Max(0, all.Count - Options.KeepCheckpoints)))
            if (step != Step) Checkpoint.Delete(folder);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);
}
