namespace UioLlm.Tests.Reference;

/// <summary>y = cap * tanh(x / cap) (Gemma 2's logit soft-capping).</summary>
public static class SoftcapReference
{
    public static double[] Forward(double[] x, double cap) => x.Select(v => cap * Math.Tanh(v / cap)).ToArray();
}
