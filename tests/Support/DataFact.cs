namespace UioLlm.Tests.Support;

/// <summary>
/// A fact that reads the shared third-party data: skipped, with a one-line reason, on a fresh clone where
/// ../shared/data (or UIOLLM_DATA) is absent. CI always has the data (.ci/run fails without it).
/// </summary>
public sealed class DataFactAttribute : FactAttribute
{
    public DataFactAttribute()
    {
        if (TestData.Root is null) Skip = TestData.MissingReason;
    }
}

/// <summary>The theory form of <see cref="DataFactAttribute"/>.</summary>
public sealed class DataTheoryAttribute : TheoryAttribute
{
    public DataTheoryAttribute()
    {
        if (TestData.Root is null) Skip = TestData.MissingReason;
    }
}
