using Spectre.Console;
using UioLlm.Kernels.Distributed;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Methods;
using UioLlm.Training.Methods.Uio;
using UioLlm.Model.Methods;
using UioLlm.Training.Data;
using UioLlm.Training.Distributed;
using UioLlm.Training.Estimators;

namespace UioLlm.Cli;

/// <summary>`uio train`: train a UIO adapter on text files; resumes when the output folder holds a checkpoint.</summary>
internal static class TrainCommand
{
    public sealed record Options(string Model, string? Tokenizer, string[] Data, string Out, int Segment, int Memory, int Rank, float Alpha,
        string Estimator, int Window, int Segments, int Steps, float LearningRate, int Accumulate, int CheckpointEvery, int Seed, int Threads,
        bool DeterministicReduce = false, int KeepCheckpoints = 3, string? MaxMemory = null, string Method = "uio", int Workers = 1);

    public static readonly string[] Estimators = ["uio", "incremental", "truncated", "full"];

    /// <summary>
    /// Under an MPI launcher (`mpirun -np N uio train ...`) every rank runs this command: MPI is initialised, each
    /// step's documents are dealt out and the gradients all-reduced (<see cref="DataParallelReducer"/>), rank 0 prints
    /// and writes the run folder (which every rank must see: a shared file system), and a failure on any rank ends
    /// them all. <c>--deterministic-reduce</c> makes the result bit-identical for any number of ranks, 1 included.
    /// </summary>
    public static int Run(Options o, TextWriter output, TextWriter error)
    {
        MpiCommunicator? mpi = null;
        if (MpiCommunicator.LaunchedByMpi)
        {
            try
            {
                mpi = MpiCommunicator.InitWorld();
            }
            catch (MpiUnavailableException e)
            {
                error.WriteLine($"uio train: started by an MPI launcher, but {e.Message}");
                return 2;
            }
        }
        ICommunicator? group = mpi is not null ? mpi : o.DeterministicReduce ? SingleProcessCommunicator.Instance : null;
        var rankError = group is { Size: > 1 } ? new PrefixWriter(error, $"[rank {group.Rank}] ") : error;
        int code = Train(o, group is { Rank: > 0 } ? TextWriter.Null : output, rankError, group);
        if (mpi is not null)
        {
            if (code != 0 && mpi.Size > 1) mpi.Abort(code);   // the other ranks would wait for this one forever
            mpi.Dispose();
        }
        return code;
    }

    private static int Train(Options o, TextWriter output, TextWriter error, ICommunicator? group) => CliSupport.Guarded("train", error, () =>
    {
        CliSupport.RequireExists(o.Model, "--model");
        if (o.Data.Length == 0) throw new UsageException("--data: give at least one text file, folder or .jsonl file");
        foreach (var d in o.Data) CliSupport.RequireExists(d, "--data");
        if (!Estimators.Contains(o.Estimator)) throw new UsageException($"--estimator must be one of {string.Join(", ", Estimators)}, got '{o.Estimator}'");
        foreach (var (value, name) in new[] { (o.Segment, "--segment"), (o.Memory, "--memory"), (o.Rank, "--rank"), (o.Window, "--window"),
                     (o.Segments, "--segments"), (o.Steps, "--steps"), (o.Accumulate, "--accumulate"), (o.Workers, "--workers") })
            CliSupport.RequirePositive(value, name);
        if (o.Segments < 2) throw new UsageException($"--segments must be at least 2 (memory needs an earlier segment), got {o.Segments}");
        if (o.Threads < 0) throw new UsageException($"--threads must be 0 (all cores) or a positive number, got {o.Threads}");
        CliSupport.RequirePositiveFinite(o.LearningRate, "--lr");
        CliSupport.RequirePositiveFinite(o.Alpha, "--alpha");
        if (o.CheckpointEvery < 0) throw new UsageException($"--checkpoint-every must be 0 (only at the end) or a positive number, got {o.CheckpointEvery}");
        if (o.KeepCheckpoints < 0) throw new UsageException($"--keep-checkpoints must be 0 (keep all) or a positive number, got {o.KeepCheckpoints}");
        long memoryLimit = CliSupport.ParseMemory(o.MaxMemory);
        CliSupport.RequireOutputFolder(o.Out, "--out");

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output) });
        using var loaded = CliSupport.Open(o.Model, o.Tokenizer, o.Threads, memoryLimitBytes: memoryLimit);
        var (model, tokenizer, accelerator) = (loaded.Model, loaded.Tokenizer, loaded.Accelerator);

        // Resume when the output folder already holds a checkpoint: its method and settings win. Temporary folders of an
        // interrupted save do not count (a run killed during its first save starts over; the trainer removes them).
        bool resume = Checkpoint.HasCheckpoints(o.Out);
        string? savedAdapter = resume ? Path.Combine(Checkpoint.Locate(o.Out), Checkpoint.AdapterFolderName) : null;
        var savedMethod = savedAdapter is null ? null : TrainableMethods.ReadAdapterMethod(savedAdapter);
        string methodName = savedMethod?.Method ?? (resume ? "uio" : MethodRegistry.ParseSpec(o.Method).Name);
        int segmentLength = o.Segment;
        using var trained = MakeMethod();
        ITrainableMethod MakeMethod()
        {
            if (methodName != "uio")
                return savedMethod is { } m ? TrainableMethods.Create(m.Method, m.Options, model, o.Seed) : TrainableMethods.Create(o.Method, model, o.Seed);
            if (o.Method != "uio" && !resume) throw new UsageException($"--method '{o.Method}': UIO takes its settings from --segment, --memory, --rank, --alpha, --estimator and --window, not from options");
            var config = savedAdapter is not null
                ? UioAdapter.ReadConfig(savedAdapter)
                : new UioConfig { SegmentLength = o.Segment, MemoryTokens = o.Memory, EncoderRank = o.Rank, EncoderAlpha = o.Alpha, TransferRank = o.Rank, TransferAlpha = o.Alpha };
            segmentLength = config.SegmentLength;
            EstimatorFactory factory = o.Estimator switch
            {
                "uio" => seed => new UnbiasedIncremental(o.Window, seed),
                "incremental" => _ => new IncrementalTbptt(o.Window),
                "truncated" => _ => new TruncatedBptt(o.Window),
                _ => _ => new FullBptt(),
            };
            return new UioTrainable(new UioModel(model, config, o.Seed), factory, ownsModel: true);
        }

        // Rank 0 fills the token cache first; the others then read it instead of writing the same files at once.
        TokenizedCorpus BuildCorpus() => TokenizedCorpus.Build(DocumentSource.FromPaths(o.Data), tokenizer, Path.Combine(o.Out, "token-cache"));
        TokenizedCorpus corpus = null!;
        if (group is null || group.Rank == 0) corpus = BuildCorpus();
        group?.Barrier();
        if (group is not null && group.Rank > 0) corpus = BuildCorpus();
        // The token cache is held for the whole run: count it against --max-memory.
        using var tokenReservation = accelerator.Memory.Reserve(corpus.TotalTokens * sizeof(int), $"the token cache ({corpus.TotalTokens:N0} tokens)");
        var examples = new TrainingExamples(corpus, segmentLength, o.Segments);
        if (examples.Count == 0)
            throw new UsageException($"no document is at least two segments long ({2 * segmentLength + 1} tokens); {examples.SkippedShort} were skipped as too short");
        console.MarkupLineInterpolated($"[bold]uio train[/] ({trained.Name}, {trained.Parameters.Sum(p => p.Parameter.Value.Length):N0} trainable parameters): {corpus.Documents.Count} documents, {corpus.TotalTokens:N0} tokens, {examples.Count} examples of up to {o.Segments} segments ({examples.SkippedShort} too short); {accelerator.Description}");
        if (group is not null)
            console.MarkupLineInterpolated($"data parallel: {group.Description}; {o.Accumulate} documents per step dealt round-robin, gradients {(o.DeterministicReduce ? "gathered and added in document order (deterministic)" : "all-reduced in buckets")}");
        if (group is { Size: > 1 } && o.Accumulate < group.Size)
            throw new UsageException($"--accumulate {o.Accumulate}: with {group.Size} ranks each step needs at least {group.Size} documents (one per rank), got {o.Accumulate}");
        var data = new ShuffledExamples(examples, o.Seed);

        TrainingRunResult result = null!;
        console.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: o.Steps);
                var callbacks = new TrainerCallbacks
                {
                    Progress = new Progress(p =>
                    {
                        task.MaxValue = p.TotalSteps;
                        task.Value = p.Step;
                        task.Description = $"step {p.Step}/{p.TotalSteps} loss {p.Loss:F3} lr {p.LearningRate:E1} {p.TokensPerSecond:F0} tok/s";
                    }),
                    GradientReducer = group is null ? null : new DataParallelReducer(group, o.DeterministicReduce),
                };
                var options = new TrainingOptions
                {
                    TotalSteps = o.Steps, PeakLearningRate = o.LearningRate, DocumentsPerStep = o.Accumulate, Workers = o.Workers,
                    CheckpointEvery = o.CheckpointEvery, KeepCheckpoints = o.KeepCheckpoints, Seed = o.Seed, BaseModelNameOrPath = o.Model,
                };
                using var trainer = resume
                    ? Trainer.Resume(o.Out, trained, data, callbacks)
                    : new Trainer(trained, data, options, o.Out, callbacks);
                result = trainer.Run();
            });
        console.MarkupLineInterpolated($"{(resume ? "resumed; " : "")}step {result.Step}{(result.Completed ? " (done)" : "")}; checkpoint: {result.Checkpoint}");
        return 0;
    });

    /// <summary>Prefixes every line written (each rank's error lines name the rank).</summary>
    private sealed class PrefixWriter(TextWriter inner, string prefix) : TextWriter
    {
        public override System.Text.Encoding Encoding => inner.Encoding;

        public override void WriteLine(string? value) => inner.WriteLine(prefix + value);

        public override void Write(char value) => inner.Write(value);
    }

    /// <summary>Reports synchronously (System.Progress would post to the thread pool and reorder updates).</summary>
    private sealed class Progress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
