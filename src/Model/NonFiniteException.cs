namespace UioLlm.Model;

/// <summary>
/// A computation produced NaN or infinity (logits during generation or evaluation, a loss, a gradient or an
/// update during training). The message says where, and what most likely caused it.
/// </summary>
public sealed class NonFiniteException(string message) : InvalidOperationException(message)
{
    /// <summary>Throws when <paramref name="logits"/> holds a NaN or an infinity; <paramref name="where"/> names the step (e.g. "generation, token 12").</summary>
    public static void ThrowIfAny(ReadOnlySpan<float> logits, string where)
    {
        int bad = NonFinite.FirstIndex(logits);
        if (bad >= 0)
            throw new NonFiniteException(
                $"{where}: the logits became non-finite ({NonFinite.Describe(logits[bad])} at vocabulary id {bad}); the model's weights or activations overflow, so its output would be garbage");
    }
}
