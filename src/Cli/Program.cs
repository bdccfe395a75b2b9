using System.CommandLine;
using UioLlm.Kernels;

namespace UioLlm.Cli;

public static class Program
{
    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    /// <summary>Entry point used by tests: runs the command line in-process.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        var threads = new Option<int>("--threads")
        {
            Description = "CPU threads for the kernels (0 = all cores)",
            DefaultValueFactory = _ => 0,
        };
        var quick = new Option<bool>("--quick") { Description = "Smaller shapes, fewer repetitions" };

        var kernels = new Command("kernels", "Show the compute device and measure the main kernels (GFLOP/s); --check: parity of the GPU kernels");
        var check = new Option<bool>("--check") { Description = "Run the parity cases (of --op, or all) on --backend against the CPU kernels, with times" };
        var op = new Option<string?>("--op") { Description = "One op of the kernel contract (e.g. Attention, MatMulBackward)" };
        var backend = new Option<string>("--backend")
        {
            Description = "ilgpu-cpu (ILGPU's CPU accelerator), cuda (ILGPU on an NVIDIA GPU), auto (cuda when usable) or cpu",
            DefaultValueFactory = _ => "auto",
        };
        var size = new Option<string>("--size") { Description = "tiny (CPU-accelerator shapes) or full", DefaultValueFactory = _ => "tiny" };
        var from = new Option<int>("--from") { Description = "Skip the cases before this index of the list", DefaultValueFactory = _ => 0 };
        var count = new Option<int>("--count") { Description = "Run at most this many cases", DefaultValueFactory = _ => int.MaxValue };
        var protocol = new Option<bool>("--protocol") { Description = "Machine-readable START/RESULT lines (for the crash-isolated test run)" };
        foreach (var o in new Option[] { threads, quick, check, op, backend, size, from, count, protocol }) kernels.Options.Add(o);
        kernels.SetAction(parse => parse.GetValue(check)
            ? KernelsCommand.Check(parse.GetValue(op), parse.GetValue(backend)!, parse.GetValue(size)!, parse.GetValue(from), parse.GetValue(protocol), output, error, parse.GetValue(count))
            : KernelsCommand.Run(parse.GetValue(threads), parse.GetValue(quick), output, error));

        var generate = GenerateCli(output, error);
        var tokenize = TokenizeCli(output, error);
        var info = InfoCli(output, error);
        var train = TrainCli(output, error);
        var eval = EvalCli(output, error);
        var bench = BenchCli(output, error);
        var demo = DemoCli(output, error);
        var mpi = MpiCli(output, error);
        var compare = CompareCli(output, error);

        var root = new RootCommand("uio: long-context language models with compressed memory (UIO-LLMs). "
            + "With no command, runs the built-in demo (`uio demo`: passkey retrieval beyond the window, a few minutes, no download).");
        root.Subcommands.Add(demo);
        root.Subcommands.Add(kernels);
        root.Subcommands.Add(generate);
        root.Subcommands.Add(tokenize);
        root.Subcommands.Add(info);
        root.Subcommands.Add(train);
        root.Subcommands.Add(eval);
        root.Subcommands.Add(bench);
        root.Subcommands.Add(mpi);
        root.Subcommands.Add(compare);
        root.SetAction(_ => DemoCommand.Run(new DemoCommand.Options(DefaultDemoFolder, Seed: 0, Threads: 0, Quick: false), output, error));

        var config = new InvocationConfiguration { Output = output, Error = error };
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            // A mistake in the command line is a user mistake like any other: one line each, exit code 2.
            string command = parsed.CommandResult.Command == root ? "uio" : "uio " + parsed.CommandResult.Command.Name;
            foreach (var e in parsed.Errors) error.WriteLine($"{command}: {e.Message} (see '{command} --help')");
            return 2;
        }
        return parsed.Invoke(config);
    }

    private const string DefaultDemoFolder = "uio-demo";

    private static Command DemoCli(TextWriter output, TextWriter error)
    {
        var outDir = new Option<string>("--out") { Description = "Folder for the table (CSV), the chart (SVG) and the training runs", DefaultValueFactory = _ => DefaultDemoFolder };
        var seed = new Option<int>("--seed") { Description = "Seed of everything (weights, data, estimators): one seed, one result", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var quick = new Option<bool>("--quick") { Description = "Tiny everything (seconds; for tests, the numbers mean nothing)" };
        var diagnose = new Option<bool>("--diagnose") { Description = "Also measure the attention mass on memory per layer and retrieval with memories swapped between documents" };
        var ablation = new Option<string>("--ablation") { Description = "Add the runs of one ablation: none | reservoir (S = 1, 2, 4) | transfer-head | full-bptt", DefaultValueFactory = _ => "none" };
        var command = new Command("demo", "The built-in demo: pre-train a tiny Llama, train UIO memory (TBPTT vs unbiased, curriculum vs far), "
            + "passkey accuracy vs context length and needle distance for base / StreamingLLM / UIO (tables, CSV, SVG); the pre-trained base is cached in --out");
        foreach (var o in new Option[] { outDir, seed, threads, quick, diagnose, ablation }) command.Options.Add(o);
        command.SetAction(p => DemoCommand.Run(new DemoCommand.Options(p.GetValue(outDir)!, p.GetValue(seed), p.GetValue(threads), p.GetValue(quick),
            p.GetValue(diagnose), p.GetValue(ablation)!), output, error));
        return command;
    }

    private static Command CompareCli(TextWriter output, TextWriter error)
    {
        var outDir = new Option<string>("--out") { Description = "Folder for the table (CSV), the chart (SVG), the runs and the cached base (shared with uio demo)", DefaultValueFactory = _ => DefaultDemoFolder };
        var methods = new Option<string?>("--methods") { Description = "Method specs separated by ';' or ',': uio, or a trained method as name:key=value:... (default: uio and every trained method)" };
        var seed = new Option<int>("--seed") { Description = "Seed of everything", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var quick = new Option<bool>("--quick") { Description = "Tiny everything (seconds; for tests, the numbers mean nothing)" };
        var books = new Option<bool>("--books") { Description = "The books comparison instead: a base pre-trained on public-domain books, every method trained on them, perplexity at 1x..16x the window on a held-out book" };
        var data = new Option<string?>("--data") { Description = "With --books: the shared data folder (text/, models/stories260K/tok512.bin; default UIOLLM_DATA, else ../shared/data)" };
        var command = new Command("compare", "The trained long-context methods side by side on the demo's base and passkey task (or, with --books, on books): accuracy by distance "
            + "(perplexity by length), trainable parameters, time per step, memory held (table, CSV, SVG)");
        foreach (var o in new Option[] { outDir, methods, seed, threads, quick, books, data }) command.Options.Add(o);
        command.SetAction(p => CompareCommand.Run(new CompareCommand.Options(p.GetValue(outDir)!, p.GetValue(methods), p.GetValue(seed), p.GetValue(threads), p.GetValue(quick),
            p.GetValue(books), p.GetValue(data)), output, error));
        return command;
    }

    private static Command GenerateCli(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model") { Description = "Model: a Hugging Face folder, a .gguf or a llama2.c .bin", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file (needed for llama2.c checkpoints)" };
        var adapter = new Option<string?>("--adapter") { Description = "A trained UIO adapter folder: read the prompt through compressed memory" };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (empty: start from BOS)" };
        var promptFile = new Option<string?>("--prompt-file") { Description = "Read the prompt from a file" };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 0.8f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var extrapolate = new Option<bool>("--allow-extrapolation") { Description = "With --adapter: read past UIO's position budget (memories + local tokens beyond the base's trained context)" };
        var keepQuantized = new Option<bool>("--keep-quantized")
        {
            Description = "For a quantised GGUF: keep Q8_0/Q4_0/Q4_K/Q6_K matrices quantised and decode with the quantised kernels (CPU)",
        };
        var command = new Command("generate", "Stream text from a model (optionally through a UIO adapter)");
        foreach (var o in new Option[] { model, tokenizer, adapter, prompt, promptFile, maxTokens, temperature, topP, seed, threads, extrapolate, keepQuantized }) command.Options.Add(o);
        command.SetAction(p => GenerateCommand.Run(new GenerateCommand.Options(p.GetValue(model)!, p.GetValue(tokenizer), p.GetValue(adapter),
            p.GetValue(prompt), p.GetValue(promptFile), p.GetValue(maxTokens), p.GetValue(temperature), p.GetValue(topP), p.GetValue(seed),
            p.GetValue(threads), p.GetValue(extrapolate), p.GetValue(keepQuantized)), output, error));
        return command;
    }

    private static Command TokenizeCli(TextWriter output, TextWriter error)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.model, tokenizer.bin, tokenizer.json, a .gguf, a GPT-2 folder, or cl100k_base / o200k_base", Required = true };
        var text = new Option<string?>("--text") { Description = "Text to encode (or ids to decode)" };
        var file = new Option<string?>("--file") { Description = "Read the input from a file" };
        var noBos = new Option<bool>("--no-bos") { Description = "Do not add BOS" };
        var decode = new Option<bool>("--decode") { Description = "The input is token ids: print their text" };
        var command = new Command("tokenize", "Token ids of a text (space-separated, one line), or --decode ids back to text");
        foreach (var o in new Option[] { tokenizer, text, file, noBos, decode }) command.Options.Add(o);
        command.SetAction(p => TokenizeCommand.Run(p.GetValue(tokenizer)!, p.GetValue(text), p.GetValue(file), p.GetValue(noBos), p.GetValue(decode), output, error));
        return command;
    }

    private static Command TrainCli(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model") { Description = "Base model: a Hugging Face folder, a .gguf or a llama2.c .bin", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file (needed for llama2.c checkpoints)" };
        var data = new Option<string[]>("--data") { Description = "Text files, folders or .jsonl files", Required = true, AllowMultipleArgumentsPerToken = true };
        var output_ = new Option<string>("--out") { Description = "Run folder (checkpoints, metrics); an existing run is resumed", Required = true };
        var segment = new Option<int>("--segment") { Description = "Segment length l", DefaultValueFactory = _ => 256 };
        var memory = new Option<int>("--memory") { Description = "Memory tokens n per segment", DefaultValueFactory = _ => 32 };
        var rank = new Option<int>("--rank") { Description = "LoRA rank (encoder and transfer head)", DefaultValueFactory = _ => 16 };
        var alpha = new Option<float>("--alpha") { Description = "LoRA alpha", DefaultValueFactory = _ => 32f };
        var estimator = new Option<string>("--estimator") { Description = "uio | incremental | truncated | full", DefaultValueFactory = _ => "uio" };
        var window = new Option<int>("--window") { Description = "Window / reservoir size S", DefaultValueFactory = _ => 2 };
        var segments = new Option<int>("--segments") { Description = "Most segments per training document", DefaultValueFactory = _ => 8 };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 100 };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 1e-4f };
        var accumulate = new Option<int>("--accumulate") { Description = "Documents per step", DefaultValueFactory = _ => 1 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Steps between checkpoints (0: only at the end)", DefaultValueFactory = _ => 50 };
        var seed = new Option<int>("--seed") { Description = "Run seed", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var deterministic = new Option<bool>("--deterministic-reduce") { Description = "Data parallel (under mpirun): add the documents' gradients in document order, so any number of ranks gives bit-identical results (slower)" };
        var keep = new Option<int>("--keep-checkpoints") { Description = "Keep only the newest N checkpoints (0: keep all)", DefaultValueFactory = _ => 3 };
        var maxMemory = new Option<string?>("--max-memory") { Description = "Memory budget, e.g. 512M or 4G (weights, token cache, encoder graphs): stop with a clear error before passing it" };
        var method = new Option<string>("--method")
        {
            Description = "uio (the default; its settings are the options above) or another trained method as name:key=value:... (uio eval --list-methods lists them); documents are --segments x --segment tokens",
            DefaultValueFactory = _ => "uio",
        };
        var workers = new Option<int>("--workers") { Description = "Documents of a step computed side by side, one per core (small models on the CPU)", DefaultValueFactory = _ => 1 };
        var command = new Command("train", "Train a UIO adapter (encoder LoRA, transfer head, memory embedding) or another trained method on text; under `mpirun -np N` data-parallel over N ranks");
        foreach (var o in new Option[] { model, tokenizer, data, output_, segment, memory, rank, alpha, estimator, window, segments, steps, lr, accumulate, checkpointEvery, seed, threads, deterministic, keep, maxMemory, method, workers })
            command.Options.Add(o);
        command.SetAction(p => TrainCommand.Run(new TrainCommand.Options(p.GetValue(model)!, p.GetValue(tokenizer), p.GetValue(data) ?? [],
            p.GetValue(output_)!, p.GetValue(segment), p.GetValue(memory), p.GetValue(rank), p.GetValue(alpha), p.GetValue(estimator)!,
            p.GetValue(window), p.GetValue(segments), p.GetValue(steps), p.GetValue(lr), p.GetValue(accumulate), p.GetValue(checkpointEvery),
            p.GetValue(seed), p.GetValue(threads), p.GetValue(deterministic), p.GetValue(keep), p.GetValue(maxMemory), p.GetValue(method)!, p.GetValue(workers)), output, error));
        return command;
    }

    private static Command EvalCli(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Base model: a Hugging Face folder, a .gguf or a llama2.c .bin" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file (needed for llama2.c checkpoints)" };
        var adapter = new Option<string?>("--adapter") { Description = "A trained adapter folder, for the methods that need one (uio)" };
        var methods = new Option<string>("--methods") { Description = "all, or a comma-separated list: name or name:option=value:... (see --list-methods)", DefaultValueFactory = _ => "all" };
        var task = new Option<string>("--task") { Description = "perplexity | passkey | niah | babilong, or a comma-separated list", DefaultValueFactory = _ => "perplexity" };
        var data = new Option<string?>("--data") { Description = "Text: the document (perplexity) or the haystack / noise (retrieval tasks)" };
        var lengths = new Option<string>("--lengths") { Description = "Context lengths in tokens, e.g. 512,1k,2k,4k", DefaultValueFactory = _ => "1k,4k,16k" };
        var depths = new Option<string>("--depths") { Description = "Needle depths in [0, 1] (passkey, niah)", DefaultValueFactory = _ => "0,0.25,0.5,0.75,1" };
        var outDir = new Option<string>("--out") { Description = "Folder for the CSV, SVG and run.json files", DefaultValueFactory = _ => "eval" };
        var template = new Option<string?>("--template") { Description = "Passkey / needle template JSON (default: the shared data's longctx/passkey_and_niah_templates.json)" };
        var babi = new Option<string?>("--babi") { Description = "bAbI folder (default: the shared data's longctx/babi/en)" };
        var babiPrompts = new Option<string?>("--babilong-prompts") { Description = "BABILong prompts JSON (default: the shared data's longctx/babilong_prompts.json)" };
        var babiTasks = new Option<string>("--babilong-tasks") { Description = "bAbI tasks to draw from", DefaultValueFactory = _ => "qa1,qa2,qa3,qa4,qa5" };
        var trials = new Option<int>("--trials") { Description = "Retrieval prompts per length and depth", DefaultValueFactory = _ => 5 };
        var seed = new Option<int>("--seed") { Description = "Seed of the keys, haystack starts and bAbI draws", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var list = new Option<bool>("--list-methods") { Description = "List the registered methods and their options, then exit" };
        var maxMemory = new Option<string?>("--max-memory") { Description = "Memory budget, e.g. 512M or 4G (weights, KV caches, memories): stop with a clear error before passing it" };
        var command = new Command("eval", "Long-context methods side by side: perplexity vs length, passkey, needle in a haystack, BABILong (tables, CSV, SVG, run.json)");
        foreach (var o in new Option[] { model, tokenizer, adapter, methods, task, data, lengths, depths, outDir, template, babi, babiPrompts, babiTasks, trials, seed, threads, list, maxMemory })
            command.Options.Add(o);
        command.SetAction(p => EvalCommand.Run(new EvalCommand.Options(p.GetValue(model), p.GetValue(tokenizer), p.GetValue(adapter), p.GetValue(methods)!,
            p.GetValue(task)!, p.GetValue(data), p.GetValue(lengths)!, p.GetValue(depths)!, p.GetValue(outDir)!, p.GetValue(template), p.GetValue(babi),
            p.GetValue(babiPrompts), p.GetValue(babiTasks)!, p.GetValue(trials), p.GetValue(seed), p.GetValue(threads), p.GetValue(list), p.GetValue(maxMemory)), output, error));
        return command;
    }

    private static Command BenchCli(TextWriter output, TextWriter error)
    {
        var suite = new Argument<string>("SUITE") { Description = "kernels | inference | training | all", DefaultValueFactory = _ => "all" };
        var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var quick = new Option<bool>("--quick") { Description = "Smaller shapes, fewer repetitions" };
        var command = new Command("bench", "Kernel, inference and training benchmarks on this machine (tables, optional JSON)");
        command.Arguments.Add(suite);
        foreach (var o in new Option[] { json, threads, quick }) command.Options.Add(o);
        command.SetAction(p => BenchCommand.Run(p.GetValue(suite)!, p.GetValue(json), p.GetValue(threads), p.GetValue(quick), output, error));
        return command;
    }

    private static Command MpiCli(TextWriter output, TextWriter error)
    {
        var action = new Argument<string>("ACTION") { Description = "check | bench | perplexity", DefaultValueFactory = _ => "check" };
        var model = new Option<string?>("--model") { Description = "perplexity: the base model (a Hugging Face folder, a .gguf or a llama2.c .bin)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "perplexity: tokenizer file (needed for llama2.c checkpoints)" };
        var data = new Option<string?>("--data") { Description = "perplexity: the text" };
        var tokens = new Option<int>("--tokens") { Description = "perplexity: how many of its first tokens (a multiple of the ranks)", DefaultValueFactory = _ => 1024 };
        var threads = new Option<int>("--threads") { Description = "CPU threads per rank (0 = all cores)", DefaultValueFactory = _ => 1 };
        var documents = new Option<int>("--documents") { Description = "bench: documents per step (the global batch, dealt over the ranks)", DefaultValueFactory = _ => 2 };
        var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file (rank 0)" };
        var quick = new Option<bool>("--quick") { Description = "bench: smaller shapes, fewer repetitions" };
        var command = new Command("mpi", "Under `mpirun -np N`: check the MPI group (all-reduce, gradient reduction, ring attention vs single-process attention), "
            + "benchmark it (all-reduce bandwidth, data-parallel training step), or measure full-attention perplexity with the sequence split over the ranks");
        command.Arguments.Add(action);
        foreach (var o in new Option[] { threads, documents, json, quick, model, tokenizer, data, tokens }) command.Options.Add(o);
        command.SetAction(p => MpiCommand.Run(p.GetValue(action)!, p.GetValue(threads), p.GetValue(documents), p.GetValue(json), p.GetValue(quick),
            new MpiCommand.PerplexityOptions(p.GetValue(model), p.GetValue(tokenizer), p.GetValue(data), p.GetValue(tokens)), output, error));
        return command;
    }

    private static Command InfoCli(TextWriter output, TextWriter error)
    {
        var path = new Argument<string>("PATH") { Description = "A llama2.c .bin, a .gguf, a Hugging Face folder or a UIO adapter folder" };
        var command = new Command("info", "What a checkpoint, GGUF file, Hugging Face folder or UIO adapter holds");
        command.Arguments.Add(path);
        command.SetAction(p => InfoCommand.Run(p.GetValue(path)!, output, error));
        return command;
    }
}
