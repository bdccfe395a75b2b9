using System.Numerics;
using UioLlm.Kernels;

namespace UioLlm.Model;

/// <summary>Finds NaN and infinity in weights, logits and gradients (vectorised: x - x is 0 exactly when x is finite).</summary>
public static class NonFinite
{
    /// <summary>The index of the first NaN or infinity in <paramref name="values"/>, or -1 when all are finite.</summary>
    public static int FirstIndex(ReadOnlySpan<float> values)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && values.Length >= Vector<float>.Count)
        {
            var vectors = System.Runtime.InteropServices.MemoryMarshal.Cast<float, Vector<float>>(values);
            for (int v = 0; v < vectors.Length; v++)
            {
                var x = vectors[v];
                if (!Vector.EqualsAll(x - x, Vector<float>.Zero))
                {
                    i = v * Vector<float>.Count;
                    break;
                }
                i = (v + 1) * Vector<float>.Count;
            }
        }
        for (; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    /// <summary>The index of the first NaN or infinity in <paramref name="tensor"/> (copied to the host when it lives on a device), or -1.</summary>
    public static int FirstIndex(Tensor tensor) =>
        tensor.Memory.IsHostAccessible ? FirstIndex(tensor.Span) : FirstIndex(tensor.ToArray());

    /// <summary>"NaN", "+Inf" or "-Inf".</summary>
    public static string Describe(float value) =>
        float.IsNaN(value) ? "NaN" : float.IsPositiveInfinity(value) ? "+Inf" : float.IsNegativeInfinity(value) ? "-Inf" : value.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Row-major coordinates of a flat index, e.g. "[3, 17]".</summary>
    public static string Coordinates(ReadOnlySpan<int> shape, int index)
    {
        var parts = new int[shape.Length];
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            parts[d] = shape[d] == 0 ? 0 : index % shape[d];
            index = shape[d] == 0 ? 0 : index / shape[d];
        }
        return "[" + string.Join(", ", parts) + "]";
    }
}
