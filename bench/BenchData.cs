namespace UioLlm.Bench;

/// <summary>The shared third-party data (UIOLLM_DATA, or ../shared/data above the binaries), if present.</summary>
internal static class BenchData
{
    public static string? Find(params string[] parts)
    {
        string? env = Environment.GetEnvironmentVariable("UIOLLM_DATA");
        var roots = new List<string>();
        if (!string.IsNullOrEmpty(env)) roots.Add(env);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            roots.Add(Path.Combine(dir.FullName, "..", "shared", "data"));
        foreach (var root in roots)
        {
            string path = Path.Combine([root, .. parts]);
            if (File.Exists(path)) return Path.GetFullPath(path);
        }
        return null;
    }
}
