using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Autograd;
using UioLlm.Model.Modules;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>
/// The block's batched forward (<see cref="LlamaBlock.ForwardBatch"/>), its all-row projection hook
/// (<see cref="IProjectionAdapters"/>), the attention-input callback and a LoRA kept apart from the base
/// (<see cref="Linear.Forward(Tape, Var, Lora)"/>).
/// </summary>
public sealed class AttentionBatchAndAdapterTests
{
    /// <summary>Layer and projection -> adapter; null everywhere else.</summary>
    private sealed class LoraAdapters(Dictionary<(int, AttentionProjection), Lora> adapters) : IProjectionAdapters
    {
        public int Calls { get; private set; }

        public Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input)
        {
            Calls++;
            return adapters.TryGetValue((layer, which), out var lora) ? baseProjection.Forward(tape, input, lora) : null;
        }
    }

    /// <summary>Returns one row too few.</summary>
    private sealed class Truncating : IProjectionAdapters
    {
        public Var? Project(Tape tape, int layer, AttentionProjection which, Linear baseProjection, Var input) =>
            tape.SliceRows(baseProjection.Forward(tape, input), 0, input.Value.Dim(0) - 1);
    }

    [Fact]
    public void ForwardBatchEqualsEachSequenceAlone()
    {
        var config = GradCheck.TinyConfig() with { Layers = 2, LocalLayers = 1, LocalWindow = 3 };
        using var weights = GradCheck.RandomWeights(config, seed: 401);
        var model = new LlamaModel(weights);
        const int sequences = 3, width = 7;
        int[] ids = new Rng(402).Ints(sequences * width, 0, config.VocabSize);
        int[] positions = [2, 3, 4, 5, 6, 7, 8];
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        var batched = model.Embed(tape, ids);
        var inputs = new List<float[]>[config.Layers];
        for (int l = 0; l < config.Layers; l++)
        {
            int layer = l;
            inputs[l] = [];
            batched = model.Blocks[l].ForwardBatch(tape, batched, sequences, positions, attentionInput: v => inputs[layer].Add(v.Value.ToArray()));
        }
        var all = batched.Value.ToArray();
        int dim = config.Dim;
        for (int s = 0; s < sequences; s++)
        {
            var x = model.Embed(tape, ids.AsSpan(s * width, width));
            for (int l = 0; l < config.Layers; l++)
            {
                float[]? input = null;
                x = model.Blocks[l].Forward(tape, x, positions, attentionInput: v => input = v.Value.ToArray());
                Check.Close(input!, inputs[l][0].AsSpan(s * width * dim, width * dim), 1e-6, 1e-5, $"sequence {s} layer {l} attention input");
            }
            Check.Close(x.Value.ToArray(), all.AsSpan(s * width * dim, width * dim), 1e-6, 1e-5, $"sequence {s} output");
        }
        Assert.All(inputs, list => Assert.Single(list));
    }

    [Fact]
    public void AdaptersEqualTheSameLoraAttachedAndNullAdaptersChangeNoBit()
    {
        var config = GradCheck.TinyConfig() with { AttentionBias = true };
        using var weights = GradCheck.RandomWeights(config, seed: 403);
        var frozen = new LlamaModel(weights);
        var attachedModel = new LlamaModel(weights);
        var attached = attachedModel.AttachLora(2, 4f, 404, "q_proj", "v_proj");
        var rng = new Rng(405);
        foreach (var lora in attached) lora.B.Value.CopyFrom(rng.Normal(lora.B.Value.Length, 0.3f));
        var map = new Dictionary<(int, AttentionProjection), Lora>();
        for (int l = 0; l < config.Layers; l++)
        {
            map[(l, AttentionProjection.Query)] = attached[2 * l];
            map[(l, AttentionProjection.Value)] = attached[2 * l + 1];
        }
        var adapters = new LoraAdapters(map);
        var none = new LoraAdapters(new());
        int[] ids = rng.Ints(9, 0, config.VocabSize);
        int[] positions = Enumerable.Range(0, ids.Length).ToArray();

        float[] Run(LlamaModel model, IProjectionAdapters? hook)
        {
            using var tape = new Tape(model.Accelerator);
            using var _ = tape.NoGrad();
            var x = model.Embed(tape, ids);
            for (int l = 0; l < config.Layers; l++) x = model.Blocks[l].Forward(tape, x, positions, adapters: hook);
            return model.Head.Forward(tape, model.FinalNorm.Forward(tape, x)).Value.ToArray();
        }
        var plain = Run(frozen, null);
        Assert.Equal(plain, Run(frozen, none));
        Assert.Equal(4 * config.Layers, none.Calls);   // q, k, v, o of every layer
        var adapted = Run(frozen, adapters);
        Assert.Equal(Run(attachedModel, null), adapted);
        Assert.NotEqual(plain, adapted);
        attachedModel.DetachLora();
    }

    [Fact]
    public void BadBatchesAndAdaptersAreRejected()
    {
        using var weights = GradCheck.RandomWeights(GradCheck.TinyConfig(), seed: 406);
        var model = new LlamaModel(weights);
        var block = model.Blocks[0];
        using var tape = new Tape(model.Accelerator);
        using var _ = tape.NoGrad();
        var x = model.Embed(tape, [1, 2, 3, 4, 5, 6]);
        int[] three = [0, 1, 2];
        Assert.Throws<ArgumentOutOfRangeException>(() => block.ForwardBatch(tape, x, 0, three));
        Assert.Contains("expected [3 x 3", Assert.Throws<ArgumentException>(() => block.ForwardBatch(tape, x, 3, three)).Message);
        Assert.Throws<ArgumentException>(() => block.ForwardBatch(tape, x, 2, []));
        Assert.Contains("returned", Assert.Throws<InvalidOperationException>(() => block.ForwardBatch(tape, x, 2, three, adapters: new Truncating())).Message);
        // The observer describes one sequence: an unbatched forward calls it, a batched one does not.
        int probes = 0;
        block.Attention.Observer = _ => probes++;
        try
        {
            block.ForwardBatch(tape, x, 2, three);
            Assert.Equal(0, probes);
            block.Forward(tape, x, [0, 1, 2, 3, 4, 5]);
            Assert.Equal(1, probes);
        }
        finally
        {
            block.Attention.Observer = null;
        }
        // A LoRA kept apart must fit the projection.
        using var wrong = new Lora(model.Accelerator, 5, block.Attention.Q.OutFeatures, 2, 4f, new Random(1));
        Assert.Throws<ArgumentException>(() => block.Attention.Q.Forward(tape, x, wrong));
    }
}
