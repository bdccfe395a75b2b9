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

        var kernels = new Command("kernels", "Show the compute device and measure the main kernels (GFLOP/s)");
        kernels.Options.Add(threads);
        kernels.Options.Add(quick);
        kernels.SetAction(parse => KernelsCommand.Run(parse.GetValue(threads), parse.GetValue(quick), output, error));

        var generate = GenerateCli(output, error);
        var tokenize = TokenizeCli(output, error);
        var info = InfoCli(output, error);
        var train = TrainCli(output, error);
        var eval = EvalCli(output, error);
        var bench = BenchCli(output, error);
        var demo = DemoCli(output, error);

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
        var command = new Command("demo", "The built-in demo: pre-train a tiny Llama, train UIO memory (TBPTT vs unbiased), "
            + "passkey accuracy vs context length for base / StreamingLLM / UIO (table, CSV, SVG)");
        foreach (var o in new Option[] { outDir, seed, threads, quick }) command.Options.Add(o);
        command.SetAction(p => DemoCommand.Run(new DemoCommand.Options(p.GetValue(outDir)!, p.GetValue(seed), p.GetValue(threads), p.GetValue(quick)), output, error));
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
        var command = new Command("generate", "Stream text from a model (optionally through a UIO adapter)");
        foreach (var o in new Option[] { model, tokenizer, adapter, prompt, promptFile, maxTokens, temperature, topP, seed, threads }) command.Options.Add(o);
        command.SetAction(p => GenerateCommand.Run(new GenerateCommand.Options(p.GetValue(model)!, p.GetValue(tokenizer), p.GetValue(adapter),
            p.GetValue(prompt), p.GetValue(promptFile), p.GetValue(maxTokens), p.GetValue(temperature), p.GetValue(topP), p.GetValue(seed),
            p.GetValue(threads)), output, error));
        return command;
    }

    private static Command TokenizeCli(TextWriter output, TextWriter error)
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.model, tokenizer.bin, tokenizer.json, a .gguf or a GPT-2 folder", Required = true };
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
        var keep = new Option<int>("--keep-checkpoints") { Description = "Keep only the newest N checkpoints (0: keep all)", DefaultValueFactory = _ => 3 };
        var maxMemory = new Option<string?>("--max-memory") { Description = "Memory budget, e.g. 512M or 4G (weights, token cache, encoder graphs): stop with a clear error before passing it" };
        var command = new Command("train", "Train a UIO adapter (encoder LoRA, transfer head, memory embedding) on text");
        foreach (var o in new Option[] { model, tokenizer, data, output_, segment, memory, rank, alpha, estimator, window, segments, steps, lr, accumulate, checkpointEvery, seed, threads, keep, maxMemory })
            command.Options.Add(o);
        command.SetAction(p => TrainCommand.Run(new TrainCommand.Options(p.GetValue(model)!, p.GetValue(tokenizer), p.GetValue(data) ?? [],
            p.GetValue(output_)!, p.GetValue(segment), p.GetValue(memory), p.GetValue(rank), p.GetValue(alpha), p.GetValue(estimator)!,
            p.GetValue(window), p.GetValue(segments), p.GetValue(steps), p.GetValue(lr), p.GetValue(accumulate), p.GetValue(checkpointEvery),
            p.GetValue(seed), p.GetValue(threads), p.GetValue(keep), p.GetValue(maxMemory)), output, error));
        return command;
    }

    private static Command EvalCli(TextWriter output, TextWriter error)
    {
        var model = new Option<string>("--model") { Description = "Base model: a Hugging Face folder, a .gguf or a llama2.c .bin", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file (needed for llama2.c checkpoints)" };
        var adapter = new Option<string?>("--adapter") { Description = "A trained UIO adapter folder, evaluated beside the base model" };
        var task = new Option<string>("--task") { Description = "perplexity | passkey", Required = true };
        var data = new Option<string>("--data") { Description = "Text: the document (perplexity) or the haystack (passkey)", Required = true };
        var lengths = new Option<string>("--lengths") { Description = "Context lengths in tokens, e.g. 1k,4k,16k", DefaultValueFactory = _ => "1k,4k,16k" };
        var outDir = new Option<string>("--out") { Description = "Folder for the CSV and SVG", DefaultValueFactory = _ => "eval" };
        var template = new Option<string?>("--template") { Description = "Passkey template JSON (default: the shared data's)" };
        var trials = new Option<int>("--trials") { Description = "Passkey prompts per length (needle depths spread evenly)", DefaultValueFactory = _ => 5 };
        var seed = new Option<int>("--seed") { Description = "Seed for passkeys and haystack starts", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var maxMemory = new Option<string?>("--max-memory") { Description = "Memory budget, e.g. 512M or 4G (weights, KV caches, memories): stop with a clear error before passing it" };
        var command = new Command("eval", "Perplexity or passkey accuracy versus context length: base model window vs UIO memory (CSV + SVG)");
        foreach (var o in new Option[] { model, tokenizer, adapter, task, data, lengths, outDir, template, trials, seed, threads, maxMemory }) command.Options.Add(o);
        command.SetAction(p => EvalCommand.Run(new EvalCommand.Options(p.GetValue(model)!, p.GetValue(tokenizer), p.GetValue(adapter), p.GetValue(task)!,
            p.GetValue(data)!, p.GetValue(lengths)!, p.GetValue(outDir)!, p.GetValue(template), p.GetValue(trials), p.GetValue(seed), p.GetValue(threads),
            p.GetValue(maxMemory)), output, error));
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

    private static Command InfoCli(TextWriter output, TextWriter error)
    {
        var path = new Argument<string>("PATH") { Description = "A llama2.c .bin, a .gguf, a Hugging Face folder or a UIO adapter folder" };
        var command = new Command("info", "What a checkpoint, GGUF file, Hugging Face folder or UIO adapter holds");
        command.Arguments.Add(path);
        command.SetAction(p => InfoCommand.Run(p.GetValue(path)!, output, error));
        return command;
    }
}
