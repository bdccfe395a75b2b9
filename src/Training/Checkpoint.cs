using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Serialization;
using System.Text.Json;
using System.Text;
using UioLlm.Model.Formats;

namespace UioLlm.Training;

/// <summary>A checkpoint or run folder that cannot be used: incomplete, damaged, or from another model. The message names the path.</summary>
public sealed class CheckpointFormatException : Exception
{
    public CheckpointFormatException(string path, string message, Exception? inner = null)
        : base($"{path}: {message}", inner)
    {
        Path = path;
    }

    /// <summary>The file or folder at fault.</summary>
    public string Path { get; }
}

/// <summary>
/// Everything a trainer needs besides the adapter and the optimizer moments to continue exactly: the steps
/// taken (which is also the schedule position: the learning rate is a pure function of the step and the
/// options), the options, the data position, and bookkeeping. The estimator of step s is seeded with
/// <see cref="Seeds.Derive"/>(options.Seed, s) and the trainer draws nothing else at random, so no RNG state
/// needs saving beyond the seed.
/// </summary>
public sealed record TrainerState
{
    public const int CurrentFormatVersion = 1;

    public required int FormatVersion { get; init; }
    public required int Step { get; init; }
    public required TrainingOptions Options { get; init; }
    public required TrainingDataPosition DataPosition { get; init; }
    public required double ElapsedSeconds { get; init; }
    public required long TokensSeen { get; init; }
}

/// <summary>
/// Checkpoint folders of a run: <c>{run}/checkpoints/step-00000012/</c> holding
/// <c>adapter/</c> (<see cref="Model.Uio.UioAdapter"/> files), <c>optimizer.safetensors</c> (AdamW moments and
/// step count), <c>trainer_state.json</c> (<see cref="TrainerState"/>) and, written last,
/// <c>manifest.json</c>: <c>{"format":"uiollm-checkpoint","version":1,"step":..,"files":[{"path":..,"bytes":..,"sha256":..}]}</c>.
/// A checkpoint is built in a hidden temporary folder, every file written atomically, the manifest last, and
/// only then renamed into place; a folder without a valid manifest, or whose files do not match it, is never
/// taken for a checkpoint.
/// </summary>
public static class Checkpoint
{
    public const string CheckpointsFolderName = "checkpoints";
    public const string AdapterFolderName = "adapter";
    public const string OptimizerFileName = "optimizer.safetensors";
    public const string StateFileName = "trainer_state.json";
    public const string ManifestFileName = "manifest.json";
    private const string Format = "uiollm-checkpoint";
    private const int ManifestVersion = 1;
    private const string FolderPrefix = "step-";

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The folder of the checkpoint at <paramref name="step"/> in <paramref name="runFolder"/>.</summary>
    public static string FolderFor(string runFolder, int step) =>
        Path.Combine(runFolder, CheckpointsFolderName, FolderPrefix + step.ToString("D8", CultureInfo.InvariantCulture));

    /// <summary>The run folder a checkpoint folder belongs to ({run}/checkpoints/step-N).</summary>
    public static string RunFolderOf(string checkpointFolder)
    {
        var full = new DirectoryInfo(Path.GetFullPath(checkpointFolder));
        if (full.Parent is not { Name: CheckpointsFolderName, Parent: { } run })
            throw new CheckpointFormatException(checkpointFolder, $"a checkpoint folder must sit in '<run>/{CheckpointsFolderName}/'");
        return run.FullName;
    }

    /// <summary>
    /// Writes a checkpoint: <paramref name="writeFiles"/> fills a temporary folder, the manifest is added last,
    /// and the folder is renamed to <see cref="FolderFor"/> (replacing an older one for the same step).
    /// </summary>
    /// <returns>The checkpoint folder.</returns>
    public static string Write(string runFolder, int step, Action<string> writeFiles)
    {
        ArgumentException.ThrowIfNullOrEmpty(runFolder);
        ArgumentNullException.ThrowIfNull(writeFiles);
        string final = Path.GetFullPath(FolderFor(runFolder, step));
        string parent = Path.GetDirectoryName(final)!;
        string temp = Path.Combine(parent, $".{Path.GetFileName(final)}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            writeFiles(temp);
            WriteManifest(temp, step);
            // An older checkpoint of the same step is first renamed to a temporary name (one rename: a kill
            // leaves either it or the new one in place, plus a temporary folder that the next start removes).
            if (Directory.Exists(final)) DeleteViaTemporary(final);
            Directory.Move(temp, final);
        }
        finally
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
        }
        return final;
    }

    /// <summary>
    /// True for the name of a folder that a save or a prune left behind when it was interrupted
    /// (<c>.step-N.&lt;guid&gt;.tmp</c>): never a checkpoint, and safe to delete when no save is running.
    /// </summary>
    public static bool IsTemporaryName(string name) =>
        name.StartsWith("." + FolderPrefix, StringComparison.Ordinal) && name.EndsWith(".tmp", StringComparison.Ordinal);

    /// <summary>
    /// Deletes the temporary folders that interrupted saves or prunes left in the run's checkpoints folder;
    /// returns how many were removed. Called when a trainer starts (no save of this run is in progress then).
    /// </summary>
    public static int CleanTemporaryFolders(string runFolder)
    {
        string root = Path.Combine(runFolder, CheckpointsFolderName);
        if (!Directory.Exists(root)) return 0;
        int removed = 0;
        foreach (var dir in Directory.GetDirectories(root))
        {
            if (!IsTemporaryName(Path.GetFileName(dir))) continue;
            Directory.Delete(dir, recursive: true);
            removed++;
        }
        return removed;
    }

    /// <summary>True when the run folder holds at least one checkpoint folder (complete or not; temporary folders do not count).</summary>
    public static bool HasCheckpoints(string runFolder) => List(runFolder).Count > 0;

    /// <summary>
    /// Removes a checkpoint folder so that an interruption never leaves a half-deleted checkpoint under its
    /// own name: it is renamed to a temporary name (atomic), then deleted.
    /// </summary>
    public static void Delete(string checkpointFolder) => DeleteViaTemporary(Path.GetFullPath(checkpointFolder));

    private static void DeleteViaTemporary(string folder)
    {
        string parent = Path.GetDirectoryName(folder)!;
        string aside = Path.Combine(parent, $".{Path.GetFileName(folder)}.{Guid.NewGuid():N}.tmp");
        Directory.Move(folder, aside);
        Directory.Delete(aside, recursive: true);
    }

    /// <summary>
    /// Checks that <paramref name="folder"/> is a complete checkpoint: a valid manifest whose every file exists
    /// with the recorded size and SHA-256. Returns the step the manifest records.
    /// </summary>
    /// <exception cref="CheckpointFormatException">The manifest is missing, torn or invalid, or a file is missing or differs.</exception>
    public static int Verify(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new CheckpointFormatException(folder, "checkpoint folder does not exist");
        string path = Path.Combine(folder, ManifestFileName);
        if (!File.Exists(path))
            throw new CheckpointFormatException(folder,
                $"not a complete checkpoint: {ManifestFileName} is missing (the checkpoint was interrupted while being written, or this is not a checkpoint folder)");
        JsonDocument doc;
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            Utf8Text.Require(bytes, path, "the manifest");
            doc = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, $"manifest is not valid JSON (partially written?): {e.Message}", e);
        }
        catch (Model.ModelFormatException e)
        {
            throw new CheckpointFormatException(path, e.Message[(path.Length + 2)..], e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, "manifest must be a JSON object");
            if (String(root, "format", path) != Format) throw new CheckpointFormatException(path, $"field 'format' must be '{Format}'");
            int version = Int(root, "version", path);
            if (version != ManifestVersion) throw new CheckpointFormatException(path, $"manifest version {version} is not supported (expected {ManifestVersion})");
            int step = Int(root, "step", path);
            if (!root.TryGetProperty("files", out var files) || files.ValueKind != JsonValueKind.Array || files.GetArrayLength() == 0)
                throw new CheckpointFormatException(path, "field 'files' is missing or not a non-empty list");
            var listed = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in files.EnumerateArray())
            {
                if (entry.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(path, "every entry of 'files' must be an object {path, bytes, sha256}");
                string relative = String(entry, "path", path);
                listed.Add(relative);
                VerifyFile(folder, relative, Long(entry, "bytes", path), String(entry, "sha256", path), path);
            }
            foreach (string required in RequiredFiles)
                if (!listed.Contains(required)) throw new CheckpointFormatException(path, $"manifest does not list '{required}'");
            return step;
        }
    }

    /// <summary>
    /// The checkpoint to resume from: <paramref name="path"/> itself when it holds a manifest, else the newest
    /// complete checkpoint of the run folder <paramref name="path"/> (incomplete ones are skipped).
    /// </summary>
    /// <exception cref="CheckpointFormatException">No complete checkpoint is found, or the given checkpoint is incomplete.</exception>
    public static string Locate(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!Directory.Exists(path)) throw new CheckpointFormatException(path, "folder does not exist; expected a run folder or a checkpoint folder");
        bool isCheckpoint = File.Exists(Path.Combine(path, ManifestFileName))
            || Path.GetFileName(Path.TrimEndingDirectorySeparator(path)).StartsWith(FolderPrefix, StringComparison.Ordinal);
        if (isCheckpoint)
        {
            Verify(path);
            return Path.GetFullPath(path);
        }
        foreach (var (_, folder) in List(path).Reverse())
        {
            try
            {
                Verify(folder);
                return folder;
            }
            catch (CheckpointFormatException)
            {
                // An interrupted or damaged checkpoint: fall back to the one before it.
            }
        }
        throw new CheckpointFormatException(path, $"no complete checkpoint in '{Path.Combine(path, CheckpointsFolderName)}'");
    }

    /// <summary>The checkpoint folders of a run (complete or not), oldest first.</summary>
    public static IReadOnlyList<(int Step, string Folder)> List(string runFolder)
    {
        string root = Path.Combine(runFolder, CheckpointsFolderName);
        if (!Directory.Exists(root)) return [];
        var found = new List<(int, string)>();
        foreach (var dir in Directory.GetDirectories(root))
        {
            string name = Path.GetFileName(dir);
            if (name.StartsWith(FolderPrefix, StringComparison.Ordinal)
                && int.TryParse(name.AsSpan(FolderPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int step))
                found.Add((step, Path.GetFullPath(dir)));
        }
        return found.OrderBy(f => f.Item1).ToList();
    }

    /// <summary>Reads and checks trainer_state.json of a verified checkpoint.</summary>
    public static TrainerState ReadState(string folder)
    {
        string path = Path.Combine(folder, StateFileName);
        TrainerState? state;
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            if (!System.Text.Unicode.Utf8.IsValid(bytes)) throw new CheckpointFormatException(path, "trainer state is not valid UTF-8 text");
            state = JsonSerializer.Deserialize<TrainerState>(bytes, Json);
        }
        catch (Exception e) when (e is JsonException or IOException or NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw new CheckpointFormatException(path, $"trainer state is unreadable: {e.Message}", e);
        }
        if (state is null) throw new CheckpointFormatException(path, "trainer state is null, expected an object");
        if (state.Options is null) throw new CheckpointFormatException(path, "field 'options' is null, expected the run's training options (an object)");
        if (state.FormatVersion != TrainerState.CurrentFormatVersion)
            throw new CheckpointFormatException(path, $"trainer state format {state.FormatVersion} is not supported (expected {TrainerState.CurrentFormatVersion})");
        try
        {
            state.Options.Validate();
        }
        catch (ArgumentException e)
        {
            throw new CheckpointFormatException(path, $"recorded options are invalid: {e.Message}", e);
        }
        if (state.Step < 0 || state.Step > state.Options.TotalSteps)
            throw new CheckpointFormatException(path, $"step {state.Step} lies outside [0, {state.Options.TotalSteps}]");
        return state;
    }

    /// <summary>Writes trainer_state.json into <paramref name="folder"/>, atomically.</summary>
    public static void WriteState(string folder, TrainerState state) =>
        AtomicFile.WriteText(Path.Combine(folder, StateFileName), JsonSerializer.Serialize(state, Json));

    private static readonly string[] RequiredFiles =
    [
        AdapterFolderName + "/" + Model.Uio.UioAdapter.WeightsFileName,
        AdapterFolderName + "/" + Model.Uio.UioAdapter.ConfigFileName,
        OptimizerFileName,
        StateFileName,
    ];

    private static void WriteManifest(string folder, int step)
    {
        var files = Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace('\\', '/'))
            .Where(f => f != ManifestFileName)
            .OrderBy(f => f, StringComparer.Ordinal)
            .ToList();
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", Format);
            w.WriteNumber("version", ManifestVersion);
            w.WriteNumber("step", step);
            w.WriteStartArray("files");
            foreach (string relative in files)
            {
                string full = Path.Combine(folder, relative);
                w.WriteStartObject();
                w.WriteString("path", relative);
                w.WriteNumber("bytes", new FileInfo(full).Length);
                w.WriteString("sha256", Sha256(full));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        AtomicFile.WriteText(Path.Combine(folder, ManifestFileName), Encoding.UTF8.GetString(buffer.ToArray()));
    }

    private static void VerifyFile(string folder, string relative, long bytes, string sha256, string manifestPath)
    {
        if (relative.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(relative))
            throw new CheckpointFormatException(manifestPath, $"file path '{relative}' leaves the checkpoint folder");
        string full = Path.Combine(folder, relative);
        if (!File.Exists(full)) throw new CheckpointFormatException(full, "file listed in the manifest is missing");
        long actual = new FileInfo(full).Length;
        if (actual != bytes) throw new CheckpointFormatException(full, $"file has {actual} bytes, the manifest records {bytes}");
        if (!string.Equals(Sha256(full), sha256, StringComparison.OrdinalIgnoreCase))
            throw new CheckpointFormatException(full, "file content differs from the manifest's SHA-256");
    }

    private static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static string String(JsonElement obj, string name, string path) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new CheckpointFormatException(path, $"field '{name}' is missing or not a string");

    private static int Int(JsonElement obj, string name, string path) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) && i >= 0
            ? i
            : throw new CheckpointFormatException(path, $"field '{name}' is missing or not a non-negative integer");

    private static long Long(JsonElement obj, string name, string path) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long i) && i >= 0
            ? i
            : throw new CheckpointFormatException(path, $"field '{name}' is missing or not a non-negative integer");
}
