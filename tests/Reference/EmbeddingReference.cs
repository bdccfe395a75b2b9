namespace UioLlm.Tests.Reference;

/// <summary>Row gather: output[t] = table[ids[t]].</summary>
public static class EmbeddingReference
{
    public static double[] Forward(double[] table, int d, int[] ids)
    {
        var y = new double[ids.Length * d];
        for (int t = 0; t < ids.Length; t++)
            for (int i = 0; i < d; i++) y[t * d + i] = table[ids[t] * d + i];
        return y;
    }
}
