using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Model.Uio;
using UioLlm.Tests.Model;
using UioLlm.Tests.Support;
using UioLlm.Training.Optim;

namespace UioLlm.Tests.Training;

/// <summary>Every weight trainable (pre-training a small base, as the demo does): gradients and a few optimizer steps.</summary>
public sealed class FullWeightTrainingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WeightGradientsMatchFiniteDifferences(bool tied)
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(tied), seed: 70);
        var model = new LlamaModel(weights, trainable: true);
        var parameters = model.WeightParameters().ToList();
        Assert.Equal(1 + weights.Config.Layers * 9 + 1 + (tied ? 0 : 1), parameters.Count);
        Assert.All(parameters, p => Assert.True(p.RequiresGrad));
        int[] ids = [3, 17, 9, 30, 1, 22, 8];
        int[] targets = [17, 9, 30, 1, 22, 8, 5];
        foreach (var p in parameters) p.ZeroGrad();
        using (var tape = new Tape(weights.Accelerator))
            tape.Backward(model.Loss(tape, ids, targets));
        double Loss()
        {
            using var t = new Tape(weights.Accelerator);
            using var _ = t.NoGrad();
            return model.Loss(t, ids, targets).Value.ToArray()[0];
        }
        GradCheck.PerTensor(Loss, parameters, new Rng(71), 1e-2, 3e-2, tied ? "tied full-weight model" : "full-weight model");
        foreach (var p in parameters) p.DisposeLeaf();
    }

    [Fact]
    public void AdamWOnEveryWeightLearnsARepeatedSequence()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(tied: true), seed: 72);
        var model = new LlamaModel(weights, trainable: true);
        using var optimizer = new AdamW(model.WeightParameters().Select(p => new AdamWParameter(p, Decay: p.Value.Rank == 2)).ToList(), new AdamWSettings(WeightDecay: 0f));
        int[] ids = new Rng(73).Ints(17, 0, 37);
        double first = 0, last = 0;
        for (int step = 0; step < 40; step++)
        {
            foreach (var p in model.WeightParameters()) p.ZeroGrad();
            using var tape = new Tape(weights.Accelerator);
            var loss = model.Loss(tape, ids[..^1], ids[1..]);
            tape.Backward(loss);
            optimizer.Step(3e-2f);
            last = loss.Value.ToArray()[0];
            if (step == 0) first = last;
        }
        Assert.True(last < 0.3 * first, $"loss went from {first:F3} to {last:F3}");
        foreach (var p in model.WeightParameters()) p.DisposeLeaf();
    }

    [Fact]
    public void TrainableWeightsExcludeLoraAndTheUioDecoder()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 74);
        var model = new LlamaModel(weights, trainable: true);
        Assert.Throws<InvalidOperationException>(() => model.AttachLora(2, 4, 0, "q_proj"));
        var e = Assert.Throws<ArgumentException>(() => new UioModel(model, UioLlm.Tests.Uio.UioModelTests.Small()));
        Assert.Contains("frozen", e.Message);
        Assert.DoesNotContain(new LlamaModel(weights).WeightParameters(), p => p.RequiresGrad);
    }
}
