using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Tests.Uio;
using UioLlm.Training.Estimators;

namespace UioLlm.Tests.Kernels;

/// <summary>
/// The representative subset CI runs through the model layer on the ILGPU backend (ILGPU's CPU accelerator here; the
/// GPU runner and UIOLLM_TEST_BACKEND=gpu run the whole model suite on CUDA): a forward pass, LoRA gradients, and one
/// UIO estimator step, each against the same model on the CPU kernels. The kernels themselves are covered case by case
/// (crash-isolated) by the parity suite; these check that the model code drives a device backend correctly.
/// </summary>
public sealed class IlgpuModelTests
{
    private static readonly Lazy<Accelerator> gpu = new(() => Accelerator.Create(AcceleratorKind.IlgpuCpu));
    private static readonly Lazy<Accelerator> cpu = new(() => Accelerator.Create(AcceleratorKind.Cpu));

    private static double MaxRelative(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = Math.Max(1e-6, expected.Max(v => Math.Abs((double)v)));
        return expected.Zip(actual, (e, a) => Math.Abs((double)e - a)).Max() / scale;
    }

    private static (float Loss, float[][] Grads) LossAndLoraGradients(Accelerator acc, int[] ids)
    {
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 11, acc);
        var model = new LlamaModel(weights);
        model.AttachLora(rank: 2, alpha: 4, seed: 3, "q_proj", "v_proj", "down_proj");
        var rng = new Rng(5);
        foreach (var p in model.TrainableParameters()) p.Value.CopyFrom(rng.Normal(p.Value.Length, 0.3f));
        float loss;
        using (var tape = new Tape(acc))
        {
            var l = model.Loss(tape, ids[..^1], ids[1..]);
            loss = l.Value.ToArray()[0];
            tape.Backward(l);
        }
        var grads = model.TrainableParameters().Select(p => p.Grad!.ToArray()).ToArray();
        weights.Dispose();
        return (loss, grads);
    }

    [Fact]
    public void AForwardPassAndItsLoraGradientsMatchTheCpu()
    {
        var ids = new Rng(7).Ints(10, 0, 37);
        var (lossCpu, gradsCpu) = LossAndLoraGradients(cpu.Value, ids);
        var (lossGpu, gradsGpu) = LossAndLoraGradients(gpu.Value, ids);
        Assert.Equal(lossCpu, lossGpu, 1e-4);
        Assert.Equal(gradsCpu.Length, gradsGpu.Length);
        Assert.True(gradsCpu.Sum(g => g.Sum(Math.Abs)) > 0, "the gradients are not all zero");
        for (int i = 0; i < gradsCpu.Length; i++)
            Assert.True(MaxRelative(gradsCpu[i], gradsGpu[i]) < 1e-3, $"LoRA parameter {i}: relative error {MaxRelative(gradsCpu[i], gradsGpu[i]):G3}");
    }

    private static float[] UioStep(Accelerator acc)
    {
        const int l = 4, n = 2, segments = 2;   // the encoder, the transfer head and the memory-prefix decoder, once each
        var weights = GradCheck.RandomWeights(GradCheck.TinyConfig() with { MaxSeqLen = 512 }, seed: 21, acc);
        var uio = new UioModel(new LlamaModel(weights), UioModelTests.Small(l: l, n: n), 21);
        UioModelTests.Randomise(uio, 22, std: 0.3f);
        uio.MemoryEmbedding.Value.CopyFrom(new Rng(23).Normal(weights.Config.Dim, 1f));
        var document = new Rng(24).Ints(segments * l + 1, 0, 37);
        foreach (var p in uio.TrainableParameters()) p.ZeroGrad();
        var result = new UnbiasedIncremental(reservoirSize: 1, seed: 5).Accumulate(uio, document);
        Assert.True(float.IsFinite((float)result.Loss));
        var grad = uio.TrainableParameters().SelectMany(p => p.Grad!.ToArray()).ToArray();
        weights.Dispose();
        return grad;
    }

    [Fact]
    public void OneUioEstimatorStepMatchesTheCpu()
    {
        var expected = UioStep(cpu.Value);
        var actual = UioStep(gpu.Value);
        Assert.True(expected.Sum(Math.Abs) > 0, "the gradient is not all zero");
        Assert.True(MaxRelative(expected, actual) < 1e-3, $"relative error {MaxRelative(expected, actual):G3}");
    }
}
