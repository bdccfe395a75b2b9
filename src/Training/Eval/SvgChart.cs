using System.Globalization;
using System.Text;

namespace UioLlm.Training.Eval;

/// <summary>A small line chart as SVG: one polyline per series over shared x values, with axes, ticks and a legend.</summary>
public static class SvgChart
{
    private static readonly string[] Colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    private static readonly string[] Dashes = ["", "6,3", "2,2"];

    /// <param name="series">Name -> (x, y) points; x drawn on a log2 scale when <paramref name="logX"/>.</param>
    /// <param name="yFloor">The y axis's lower end (linear axis only; default: 0, or the smallest y when negative).</param>
    /// <param name="note">A small line under the chart (e.g. what was left out of it).</param>
    public static string Lines(string title, string xLabel, string yLabel, IReadOnlyDictionary<string, List<(double X, double Y)>> series, bool logX = true, bool logY = false,
        double? yFloor = null, string? note = null)
    {
        const double left = 70, right = 230, top = 40;
        double bottom = note is null ? 50 : 66;
        double width = 720, height = Math.Max(400, top + 30 + 18 * series.Count);
        var points = series.Values.SelectMany(p => p).ToList();
        if (points.Count == 0) throw new ArgumentException("SvgChart: no points to draw", nameof(series));
        double Fx(double x) => logX ? Math.Log2(x) : x;
        double xMin = points.Min(p => Fx(p.X)), xMax = points.Max(p => Fx(p.X));
        points = points.Where(p => double.IsFinite(p.Y) && (!logY || p.Y > 0)).ToList();
        if (points.Count == 0) throw new ArgumentException("SvgChart: no finite point to draw", nameof(series));
        double Fy(double y) => logY ? Math.Log10(y) : y;
        double yMin = logY ? Math.Floor(points.Min(p => Fy(p.Y))) : Math.Min(yFloor ?? 0, points.Min(p => p.Y)), yMax = logY ? Math.Ceiling(points.Max(p => Fy(p.Y))) : points.Max(p => p.Y);
        if (xMax == xMin) xMax = xMin + 1;
        if (yMax == yMin) yMax = yMin + 1;
        double X(double x) => left + (Fx(x) - xMin) / (xMax - xMin) * (width - left - right);
        double Y(double y) => height - bottom - (y - yMin) / (yMax - yMin) * (height - top - bottom);   // y already on the axis scale
        string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - right}\" y2=\"{height - bottom}\" stroke=\"black\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{height - bottom}\" stroke=\"black\"/>\n");
        foreach (double x in points.Select(p => p.X).Distinct().Order())
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(X(x))}\" y=\"{height - bottom + 16}\" text-anchor=\"middle\">{Escape(Short(x))}</text>\n");
        for (int i = 0; i <= 4; i++)
        {
            double y = yMin + (yMax - yMin) * i / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 6}\" y=\"{F(Y(y) + 4)}\" text-anchor=\"end\">{F(logY ? Math.Pow(10, y) : y)}</text>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{F(Y(y))}\" x2=\"{width - right}\" y2=\"{F(Y(y))}\" stroke=\"#ddd\"/>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{(left + width - right) / 2}\" y=\"{height - bottom + 38}\" text-anchor=\"middle\">{Escape(xLabel)}</text>\n");
        if (note is not null)
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"10\" y=\"{height - 8}\" font-size=\"10\">{Escape(note)}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{(top + height - bottom) / 2}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {(top + height - bottom) / 2})\">{Escape(yLabel)}</text>\n");
        int index = 0;
        foreach (var (name, line) in series)
        {
            string color = Colors[index % Colors.Length];
            string dash = Dashes[index / Colors.Length % Dashes.Length];
            string dashAttribute = dash.Length == 0 ? "" : $" stroke-dasharray=\"{dash}\"";
            var drawn = line.Where(p => double.IsFinite(p.Y) && (!logY || p.Y > 0)).OrderBy(p => p.X).ToList();
            var ordered = drawn.Select(p => $"{F(X(p.X))},{F(Y(Fy(p.Y)))}");
            svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dashAttribute} points=\"{string.Join(' ', ordered)}\"/>\n");
            foreach (var p in drawn)
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(X(p.X))}\" cy=\"{F(Y(Fy(p.Y)))}\" r=\"3\" fill=\"{color}\"/>\n");
            double ly = top + 10 + 18 * index;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{width - right + 10}\" y1=\"{ly}\" x2=\"{width - right + 30}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dashAttribute}/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{width - right + 35}\" y=\"{ly + 4}\">{Escape(name)}</text>\n");
            index++;
        }
        svg.Append("</svg>\n");
        return svg.ToString();
    }

    private static string Short(double x) => x >= 1024 && x % 1024 == 0 ? $"{x / 1024:0}K" : x.ToString("0.##", CultureInfo.InvariantCulture);

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");
}
