using UioLlm.Kernels;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

public sealed class TapeTests
{
    private static Accelerator Acc => TestBackend.Shared;

    private static Var Param(Rng rng, string name, params int[] shape) =>
        Var.Leaf(rng.Tensor(Acc, name, shape), requiresGrad: true, name);

    [Fact]
    public void LossGradientFlowsIntoLeavesThroughEveryOp()
    {
        var rng = new Rng(1);
        var x = Param(rng, "x", 5, 8);
        var w = Param(rng, "w", 6, 8);
        var frozen = Var.Constant(rng.Tensor(Acc, "frozen", 8, 6));
        var a = Param(rng, "a", 2, 6);
        var b = Param(rng, "b", 8, 2);
        var gain = Param(rng, "gain", 8);
        var table = Param(rng, "table", 11, 8);
        int[] ids = [3, 0, 10, 3];
        int[] targets = [1, 4, -100, 7, 2, 0, 5, 3, 6];
        var rope = RopeTable.Create(4);

        Var Loss(Tape t)
        {
            var h = t.Linear(x, w);                                   // [5, 6]
            var l = t.Lora(h, frozen, a, b, 0.5f); // [5, 8]
            var n = t.RmsNorm(t.Add(l, x), gain, 1e-5f);
            var q = t.Rope(t.Reshape(n, 5, 2, 4), [0, 1, 2, 3, 4], rope);
            var att = t.Attention(q, t.Reshape(n, 5, 2, 4), t.Reshape(t.Scale(n, 0.7f), 5, 2, 4), AttentionMask.CausalMask());
            var s = t.SwiGlu(t.Reshape(att, 5, 8), n);
            var e = t.Embedding(table, ids);                          // [4, 8]
            var cat = t.ConcatRows(t.SliceRows(s, 1, 4), e);          // [8, 8] ... plus one more row
            var all = t.ConcatRows(cat, t.SliceRows(s, 0, 1));        // [9, 8]
            var logits = t.MatMul(all, table, transB: true);          // [9, 11]
            return t.CrossEntropy(logits, targets);
        }

        Var[] parameters = [x, w, a, b, gain, table];
        using (var tape = new Tape(Acc))
        {
            var loss = Loss(tape);
            tape.Backward(loss);
        }
        double Eval()
        {
            using var t = new Tape(Acc);
            using var _ = t.NoGrad();
            return Loss(t).Value.ToArray()[0];
        }
        GradCheck.PerTensor(Eval, parameters, rng, 1e-2, 2e-2, "composite graph");
    }

    [Fact]
    public void FusedLinearCrossEntropyEqualsLinearThenCrossEntropy()
    {
        var rng = new Rng(12);
        var x = Param(rng, "x", 7, 10);
        var w = Param(rng, "w", 23, 10);
        int[] targets = [3, -100, 22, 0, 5, 5, 17];
        (float Loss, float[] Dx, float[] Dw) Run(bool fused)
        {
            x.ZeroGrad();
            w.ZeroGrad();
            using var tape = new Tape(Acc);
            var loss = fused ? tape.LinearCrossEntropy(x, w, targets) : tape.CrossEntropy(tape.Linear(x, w), targets);
            var scaled = tape.Scale(loss, 1.7f); // the backward must honour an incoming dLoss other than 1
            tape.Backward(scaled);
            return (loss.Value.ToArray()[0], x.Grad!.ToArray(), w.Grad!.ToArray());
        }
        var plain = Run(fused: false);
        var fusedRun = Run(fused: true);
        Assert.Equal(plain.Loss, fusedRun.Loss, 1e-5f);
        Check.RelativeNorm(plain.Dx.Select(v => (double)v).ToArray(), fusedRun.Dx, 1e-5, "dx");
        Check.RelativeNorm(plain.Dw.Select(v => (double)v).ToArray(), fusedRun.Dw, 1e-5, "dW");

        double Eval()
        {
            using var t = new Tape(Acc);
            using var _ = t.NoGrad();
            return 1.7 * t.LinearCrossEntropy(x, w, targets).Value.ToArray()[0];
        }
        x.ZeroGrad();
        w.ZeroGrad();
        using (var tape = new Tape(Acc)) tape.Backward(tape.Scale(tape.LinearCrossEntropy(x, w, targets), 1.7f));
        GradCheck.PerTensor(Eval, [x, w], rng, 1e-2, 2e-2, "fused linear cross-entropy");
    }

    [Fact]
    public void BackwardAccumulatesIntoLeavesAcrossTapes()
    {
        var rng = new Rng(2);
        var x = Param(rng, "x", 3, 4);
        var w = Param(rng, "w", 2, 4);
        float[] Run()
        {
            using var t = new Tape(Acc);
            t.Backward(t.CrossEntropy(t.Linear(x, w), [1, 0, 1]));
            return w.Grad!.ToArray();
        }
        var once = Run();
        var twice = Run();
        for (int i = 0; i < once.Length; i++) Assert.Equal(2 * once[i], twice[i], 5);
        w.ZeroGrad();
        Assert.All(w.Grad!.ToArray(), g => Assert.Equal(0f, g));
    }

    [Fact]
    public void DetachedLeafCarriesGradientBackIntoTheProducingTape()
    {
        // One tape: loss(f(x)). Two tapes: m = f(x) on the first, loss(m~) on the second, then the first
        // is backpropagated with m~'s gradient as its seed. Both must give the same dL/dx.
        var rng = new Rng(3);
        var x = Param(rng, "x", 4, 6);
        var w = Param(rng, "w", 6, 6);
        var v = Param(rng, "v", 5, 6);
        int[] targets = [0, 4, 2, 1];

        using (var whole = new Tape(Acc))
            whole.Backward(whole.CrossEntropy(whole.Linear(whole.Linear(x, w), v), targets));
        var expected = x.Grad!.ToArray();
        x.ZeroGrad();
        v.ZeroGrad();

        var encoder = new Tape(Acc, "encoder");
        var memory = encoder.Linear(x, w);
        var detached = memory.DetachAsLeaf();
        using (var decoder = new Tape(Acc, "decoder"))
            decoder.Backward(decoder.CrossEntropy(decoder.Linear(detached, v), targets));
        Assert.All(x.Grad!.ToArray(), g => Assert.Equal(0f, g));          // nothing reached x yet
        encoder.Backward([memory], [detached.Grad!]);
        encoder.Dispose();
        Check.Close(expected, x.Grad!.ToArray(), 1e-5, 1e-4, "dL/dx through a detached leaf");
        detached.DisposeLeaf();
    }

    [Fact]
    public void IndependentTapesBackpropagateAndFreeSeparately()
    {
        var rng = new Rng(4);
        var w = Param(rng, "w", 3, 5);
        var x1 = Var.Leaf(rng.Tensor(Acc, "x1", 2, 5));
        var x2 = Var.Leaf(rng.Tensor(Acc, "x2", 2, 5));
        var first = new Tape(Acc, "segment 1");
        var second = new Tape(Acc, "segment 2");
        var l1 = first.CrossEntropy(first.Linear(x1, w), [0, 2]);
        var l2 = second.CrossEntropy(second.Linear(x2, w), [1, 1]);
        second.Backward(l2);
        second.Dispose();
        var afterSecond = w.Grad!.ToArray();
        Assert.True(float.IsFinite(l1.Value.ToArray()[0]), "the first tape is still alive and readable");
        first.Backward(l1);
        first.Dispose();

        w.ZeroGrad();
        using (var only = new Tape(Acc))
            only.Backward(only.CrossEntropy(only.Linear(x1, w), [0, 2]));
        var firstAlone = w.Grad!.ToArray();
        w.ZeroGrad();
        using (var only = new Tape(Acc))
            only.Backward(only.CrossEntropy(only.Linear(x2, w), [1, 1]));
        Check.Close(w.Grad!.ToArray(), afterSecond, 1e-6, 1e-5, "second tape alone");
        Assert.NotEqual(0f, firstAlone.Select(Math.Abs).Max());
    }

    [Fact]
    public void MisuseGivesClearErrors()
    {
        var rng = new Rng(5);
        var w = Param(rng, "w", 3, 4);
        var x = Var.Leaf(rng.Tensor(Acc, "x", 2, 4));
        var tape = new Tape(Acc, "segment 7");
        var loss = tape.CrossEntropy(tape.Linear(x, w), [0, 1]);
        tape.Backward(loss);
        var twice = Assert.Throws<TapeException>(() => tape.Backward(loss));
        Assert.Contains("segment 7", twice.Message);
        Assert.Contains("already run backward", twice.Message);
        Assert.Throws<TapeException>(() => tape.Linear(x, w));
        tape.Dispose();
        var freed = Assert.Throws<TapeException>(() => loss.Value);
        Assert.Contains("freed", freed.Message);
        Assert.Throws<TapeException>(() => tape.Backward(loss));

        using var other = new Tape(Acc, "other");
        var foreign = other.Linear(x, w);
        using var third = new Tape(Acc, "third");
        var e = Assert.Throws<TapeException>(() => third.Backward([foreign], [Acc.Allocate(2, 3)]));
        Assert.Contains("not recorded on this tape", e.Message);
        Assert.Throws<ArgumentException>(() => other.Backward(other.Linear(x, w)));   // not a scalar
    }

    [Fact]
    public void FrozenAndNoGradOpsAreNotRecordedAndTheTapeFreesWhatItOwns()
    {
        using var acc = Accelerator.Create(AcceleratorKind.Cpu, 1);   // its own pool: other tests run in parallel
        var rng = new Rng(6);
        var w = Var.Constant(rng.Tensor(acc, "w", 3, 4));
        var trainable = Var.Leaf(rng.Tensor(acc, "t", 3, 4), requiresGrad: true);
        var x = Var.Leaf(rng.Tensor(acc, "x", 2, 4));
        var tape = new Tape(acc);
        var frozen = tape.Linear(x, w);
        Assert.False(frozen.RequiresGrad);
        Assert.Equal(0, tape.RecordedOps);
        using (tape.NoGrad())
        {
            Assert.False(tape.IsRecording);
            Assert.False(tape.Linear(x, trainable).RequiresGrad);
        }
        Assert.Equal(0, tape.RecordedOps);
        var live = tape.Linear(x, trainable);
        Assert.True(live.RequiresGrad);
        Assert.Equal(1, tape.RecordedOps);
        Assert.True(tape.OwnedTensors >= 3);
        long parkedBefore = acc.Scratch.BytesHeld;
        tape.Dispose();
        Assert.Equal(0, tape.OwnedTensors);
        Assert.True(acc.Scratch.BytesHeld > parkedBefore, "freed tensors go back to the scratch pool");
        Assert.True(tape.IsFreed);
    }
}
