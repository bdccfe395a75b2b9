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

        var root = new RootCommand("uio: long-context language models with compressed memory (UIO-LLMs). "
            + "With no command, runs a quick kernel check on this machine.");
        root.Subcommands.Add(kernels);
        root.SetAction(_ => KernelsCommand.Run(threads: 0, quick: true, output, error));

        var config = new InvocationConfiguration { Output = output, Error = error };
        return root.Parse(args).Invoke(config);
    }
}
