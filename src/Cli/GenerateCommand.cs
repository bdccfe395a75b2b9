using UioLlm.Model.Generation;
using UioLlm.Model.Uio;

namespace UioLlm.Cli;

/// <summary>`uio generate`: stream text from a model, optionally through a trained UIO adapter.</summary>
internal static class GenerateCommand
{
    public sealed record Options(string Model, string? Tokenizer, string? Adapter, string? Prompt, string? PromptFile,
        int MaxTokens, float Temperature, float TopP, int Seed, int Threads, bool AllowExtrapolation = false, bool KeepQuantized = false);

    public static int Run(Options o, TextWriter output, TextWriter error) => CliSupport.Guarded("generate", error, () =>
    {
        CliSupport.RequirePositive(o.MaxTokens, "--max-tokens");
        if (o.Prompt is not null && o.PromptFile is not null) throw new UsageException("give either --prompt or --prompt-file, not both");
        string prompt = o.PromptFile is not null ? File.ReadAllText(CliSupport.RequireFile(o.PromptFile, "--prompt-file")) : o.Prompt ?? "";
        var options = new GenerationOptions { MaxNewTokens = o.MaxTokens, Temperature = o.Temperature, TopP = o.TopP, Seed = o.Seed };
        using var loaded = CliSupport.Open(o.Model, o.Tokenizer, o.Threads, o.KeepQuantized);
        var (model, tokenizer) = (loaded.Model, loaded.Tokenizer);
        // An empty prompt starts from BOS alone.
        int[] ids = prompt.Length == 0 ? [model.Config.BosId] : tokenizer.Encode(prompt, addBos: true);

        var stream = tokenizer.NewStream();
        output.Write(prompt);
        void Emit(int id) => output.Write(stream.Push(id));
        GenerationResult result;
        if (o.Adapter is not null)
        {
            using var uio = UioAdapter.Load(model, CliSupport.RequireExists(o.Adapter, "--adapter"), c => c with { AllowExtrapolation = o.AllowExtrapolation });
            if (!o.AllowExtrapolation && ids.Length + o.MaxTokens > uio.Config.MaxContextTokens(model.Config.MaxSeqLen))
                throw new UsageException($"the prompt ({ids.Length} tokens) plus --max-tokens ({o.MaxTokens}) exceeds what this UIO adapter reads inside the base's trained context " +
                    $"({uio.Config.MaxContextTokens(model.Config.MaxSeqLen)} tokens: l = {uio.Config.SegmentLength}, n = {uio.Config.MemoryTokens}, {model.Config.MaxSeqLen} positions); " +
                    "pass --allow-extrapolation to read past it");
            using var session = new UioSession(uio);
            session.Prefill(ids);
            result = session.Generate(options, Emit);
        }
        else
        {
            if (ids.Length > model.Config.MaxSeqLen)
                throw new UsageException($"the prompt is {ids.Length} tokens but the model's context is {model.Config.MaxSeqLen}; use a UIO adapter (--adapter) for longer inputs");
            result = new Generator(model).Generate(ids, options with { MaxNewTokens = Math.Min(o.MaxTokens, model.Config.MaxSeqLen - ids.Length) }, Emit);
        }
        output.WriteLine(stream.Flush());
        error.WriteLine($"[{result.Tokens.Length} tokens, {result.Reason}, {result.DecodeTokensPerSecond:F1} tok/s]");
        return 0;
    });
}
