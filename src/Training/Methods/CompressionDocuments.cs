namespace UioLlm.Training.Methods;

/// <summary>Document checks shared by the segment-compression methods (AutoCompressor, ICAE).</summary>
internal static class CompressionDocuments
{
    /// <summary>Throws unless the document has at least two tokens and one target per token but the last.</summary>
    public static void Check(string method, ReadOnlySpan<int> document, ReadOnlySpan<int> targets)
    {
        if (document.Length < 2)
            throw new ArgumentException($"{method}: a document needs at least 2 tokens (one input and what it predicts), got {document.Length}", nameof(document));
        if (targets.Length != document.Length - 1)
            throw new ArgumentException($"{method}: {targets.Length} targets for a document of {document.Length} tokens; expected {document.Length - 1}", nameof(targets));
    }

    /// <summary>Targets other than -100.</summary>
    public static int Scored(ReadOnlySpan<int> targets)
    {
        int n = 0;
        foreach (int t in targets) if (t != -100) n++;
        return n;
    }
}
