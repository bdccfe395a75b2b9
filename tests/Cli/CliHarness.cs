namespace UioLlm.Tests.Cli;

/// <summary>Runs the command line in-process and captures what it writes.</summary>
internal static class CliHarness
{
    /// <summary>`uio ARGS`: the exit code and everything written to standard output and standard error.</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = UioLlm.Cli.Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}
