using UioLlm.Cli;

namespace UioLlm.Tests.Cli;

public class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void HelpListsTheKernelsCommand()
    {
        var (code, output, _) = Run("--help");
        Assert.Equal(0, code);
        Assert.Contains("kernels", output);
    }

    [Fact]
    public void KernelsCommandMeasuresEveryKernel()
    {
        var (code, output, error) = Run("kernels", "--quick", "--threads", "1");
        Assert.True(code == 0, error);
        Assert.Contains("MatMul", output);
        Assert.Contains("Attention forward", output);
        Assert.Contains("Attention backward", output);
        Assert.Contains("GFLOP/s", output);
    }

    [Fact]
    public void NegativeThreadsIsAClearError()
    {
        var (code, _, error) = Run("kernels", "--threads", "-3");
        Assert.NotEqual(0, code);
        Assert.Contains("--threads", error);
    }

    [Fact]
    public void UnknownCommandFails()
    {
        var (code, _, error) = Run("frobnicate");
        Assert.NotEqual(0, code);
        Assert.False(string.IsNullOrWhiteSpace(error));
    }
}
