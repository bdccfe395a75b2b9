namespace UioLlm.Tests.Reference;

/// <summary>Mean cross-entropy over the rows whose target is not the ignore index, via log-sum-exp.</summary>
public static class CrossEntropyReference
{
    public static double Loss(double[] logits, int vocab, int[] targets, int ignoreIndex, out double[] lse)
    {
        int rows = targets.Length, valid = 0;
        lse = new double[rows];
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < vocab; j++) max = Math.Max(max, logits[r * vocab + j]);
            double sum = 0;
            for (int j = 0; j < vocab; j++) sum += Math.Exp(logits[r * vocab + j] - max);
            lse[r] = max + Math.Log(sum);
            if (targets[r] == ignoreIndex) continue;
            total += lse[r] - logits[r * vocab + targets[r]];
            valid++;
        }
        return valid == 0 ? 0 : total / valid;
    }
}
