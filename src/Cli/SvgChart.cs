namespace UioLlm.Cli;

/// <summary>The chart writer of the evaluation harness (<see cref="UioLlm.Training.Eval.SvgChart"/>), under the name the Cli's commands use.</summary>
internal static class SvgChart
{
    public static string Lines(string title, string xLabel, string yLabel, IReadOnlyDictionary<string, List<(double X, double Y)>> series, bool logX = true) =>
        UioLlm.Training.Eval.SvgChart.Lines(title, xLabel, yLabel, series, logX);
}
