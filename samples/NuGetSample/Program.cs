// The UioLlm engine used from its NuGet packages: generation with a model (a llama2.c / GGUF / Hugging Face
// checkpoint given on the command line, or a tiny random Llama), then one UIO memory training step.
using UioLlm.Kernels;
using UioLlm.Model;
using UioLlm.Model.Formats;
using UioLlm.Model.Generation;
using UioLlm.Model.Modules;
using UioLlm.Model.Tokenizers;
using UioLlm.Model.Uio;
using UioLlm.Training;
using UioLlm.Training.Estimators;

if (args.Length is not (0 or 2))
{
    Console.Error.WriteLine("usage: NuGetSample [MODEL TOKENIZER]   (no arguments: a tiny random model)");
    return 2;
}

using var acc = Accelerator.Create(AcceleratorKind.Cpu);
Console.WriteLine($"device: {acc.Description}");
LlamaWeights weights;
ITokenizer? tokenizer = null;
try
{
    if (args.Length == 2)
    {
        weights = ModelLoader.Load(args[0], acc);
        tokenizer = Tokenizer.Load(args[1]);
    }
    else
    {
        weights = LlamaWeights.Random(acc, new LlamaConfig { Dim = 32, HiddenDim = 64, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 64, MaxSeqLen = 128 }, seed: 1);
    }
}
catch (Exception e) when (e is ModelFormatException or IOException)
{
    Console.Error.WriteLine($"NuGetSample: {e.Message}");
    return 2;
}

using (weights)
{
    // 1. Generation (greedy).
    var model = new LlamaModel(weights);
    int[] prompt = tokenizer?.Encode("Once upon a time", addBos: true) ?? [weights.Config.BosId];
    var result = new Generator(model).Generate(prompt, new GenerationOptions { MaxNewTokens = 30, Temperature = 0 });
    Console.WriteLine(tokenizer is null
        ? $"generated ids: {string.Join(' ', result.Tokens)}"
        : $"generated: {tokenizer.Decode([.. prompt, .. result.Tokens])}");
    Console.WriteLine($"decode: {result.DecodeTokensPerSecond:F0} tokens/s");

    // 2. One UIO training step: 3 segments of 16 tokens, 2 memory tokens each, unbiased incremental estimator.
    var uio = new UioModel(model, new UioConfig { SegmentLength = 16, MemoryTokens = 2, EncoderRank = 4, EncoderAlpha = 8, TransferRank = 4, TransferAlpha = 8 });
    var rng = new Random(7);
    var document = new int[3 * 16 + 1];
    for (int i = 0; i < document.Length; i++) document[i] = rng.Next(weights.Config.VocabSize);
    string run = Path.Combine(Path.GetTempPath(), "uiollm-nuget-sample-" + Guid.NewGuid().ToString("N"));
    try
    {
        using var trainer = new Trainer(uio, new InMemoryTrainingData([document]), seed => new UnbiasedIncremental(reservoirSize: 2, seed),
            new TrainingOptions { TotalSteps = 1, PeakLearningRate = 1e-3f }, run);
        var step = trainer.TrainStep();
        Console.WriteLine($"UIO training step {step.Step}: loss {step.Loss:F4}, gradient norm {step.GradNorm:F4}, {step.Tokens} tokens in {step.Seconds:F2} s");
        if (!double.IsFinite(step.Loss) || !(step.GradNorm > 0))
        {
            Console.Error.WriteLine("NuGetSample: the training step gave no finite loss or no gradient");
            return 1;
        }
    }
    finally
    {
        if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
    }
}
return 0;
