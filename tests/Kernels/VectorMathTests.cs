using System.Runtime.Intrinsics;
using UioLlm.Kernels.Cpu;

namespace UioLlm.Tests.Kernels;

[Collection(OpsCollection.Name)]
public class VectorMathTests
{
    [Fact]
    public void ExpHasAboutSinglePrecisionRelativeError()
    {
        double worst = 0;
        for (double x = -87; x <= 88; x += 0.01234)
        {
            var v = VectorMath.Exp<Lanes256, Vector256<float>>(Vector256.Create((float)x));
            double exact = Math.Exp((float)x);
            worst = Math.Max(worst, Math.Abs(v.GetElement(3) - exact) / exact);
        }
        Assert.True(worst < 3e-7, $"worst relative error {worst:G3}");
    }

    [Fact]
    public void ExpAgreesAcrossWidthsAndHandlesExtremes()
    {
        float[] xs = [-1000f, -87.5f, -20f, -1f, 0f, 1e-6f, 1f, 20f, 88f, 1000f, float.NaN, 0.5f, -0.5f, 3f, -3f, 10f];
        var v512 = VectorMath.Exp<Lanes512, Vector512<float>>(Vector512.Create(xs));
        var v256 = VectorMath.Exp<Lanes256, Vector256<float>>(Vector256.Create(xs.AsSpan(0, 8)));
        var v128 = VectorMath.Exp<Lanes128, Vector128<float>>(Vector128.Create(xs.AsSpan(0, 4)));
        for (int i = 0; i < 8; i++) Assert.Equal(v256.GetElement(i), v512.GetElement(i));
        for (int i = 0; i < 4; i++) Assert.Equal(v128.GetElement(i), v512.GetElement(i));
        Assert.True(v512.GetElement(0) is >= 0f and < 1e-37f);
        Assert.True(float.IsFinite(v512.GetElement(9)));
        Assert.True(float.IsNaN(v512.GetElement(10)));
        Assert.Equal(1f, v512.GetElement(4));
    }

    [Fact]
    public void WidthSwitchRejectsOtherValues()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => VectorMath.Width = 64);
        Assert.Contains(VectorMath.DefaultWidth, new[] { 128, 256, 512 });
    }
}
