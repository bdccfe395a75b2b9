namespace UioLlm.Tests.Reference;

/// <summary>h = silu(gate) * up with silu(g) = g / (1 + e^-g).</summary>
public static class SwiGluReference
{
    public static double Silu(double g) => g / (1 + Math.Exp(-g));

    public static double[] Forward(double[] gate, double[] up)
    {
        var h = new double[gate.Length];
        for (int i = 0; i < h.Length; i++) h[i] = Silu(gate[i]) * up[i];
        return h;
    }
}
