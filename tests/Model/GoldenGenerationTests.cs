using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Tests.Support;

namespace UioLlm.Tests.Model;

/// <summary>The real stories260K model must reproduce llama2.c's greedy output exactly.</summary>
public sealed class GoldenGenerationTests
{
    internal static int[] ExpectedIds() =>
        File.ReadAllText(TestData.File("models", "stories260K", "greedy_200_ids_from_BOS.txt"))
            .Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();

    internal static LlamaWeights LoadStories260K() =>
        Llama2cCheckpoint.Load(TestData.File("models", "stories260K", "stories260K.bin"), TestBackend.Shared);

    /// <summary>llama2.c's run loop: 200 steps from BOS, greedy, stopping only at BOS.</summary>
    internal static int[] GreedyFromBos(LlamaModel model, int steps = 200)
    {
        var result = new Generator(model).Generate([model.Config.BosId],
            new GenerationOptions { MaxNewTokens = steps, StopTokens = [model.Config.BosId] });
        return [model.Config.BosId, .. result.Tokens];
    }

    [DataFact]
    public void Greedy200StepsFromBosReproducesTheReferenceIds()
    {
        using var weights = LoadStories260K();
        var ids = GreedyFromBos(new LlamaModel(weights));
        Assert.Equal(ExpectedIds(), ids);
    }

    [DataFact]
    public void Greedy200StepsFromBosDecodesToTheReferenceTextByteForByte()
    {
        using var weights = LoadStories260K();
        var model = new LlamaModel(weights);
        var tokenizer = Tokenizer.Load(TestData.File("models", "stories260K", "tok512.bin"));
        var expected = File.ReadAllBytes(TestData.File("models", "stories260K", "expected_greedy_200steps.txt"));

        // Streamed as generated, the way a user sees it.
        var stream = tokenizer.NewStream();
        var text = new System.Text.StringBuilder();
        new Generator(model).Generate([model.Config.BosId],
            new GenerationOptions { MaxNewTokens = 200, StopTokens = [model.Config.BosId] },
            id => text.Append(stream.Push(id)));
        text.Append(stream.Flush());
        Assert.Equal(expected, System.Text.Encoding.UTF8.GetBytes(text.ToString()));
        Assert.Equal(text.ToString(), tokenizer.Decode(ExpectedIds().AsSpan(1)));
    }
}
