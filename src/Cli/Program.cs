using UioLlm.Kernels;

namespace UioLlm.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        using var acc = Accelerator.Create(AcceleratorKind.Auto);
        Console.WriteLine($"UioLlm on {acc.Description}");
        return 0;
    }
}
