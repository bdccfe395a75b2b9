using UioLlm.Training;

namespace UioLlm.Training.Data;

/// <summary>
/// Where a <see cref="ShuffledExamples"/> stream stands: the next example is entry <paramref name="Index"/>
/// of epoch <paramref name="Epoch"/>'s permutation. Seed and count identify the stream it belongs to.
/// </summary>
public readonly record struct ExamplePosition(long Seed, int Count, int Epoch, int Index)
{
    public override string ToString() => $"epoch {Epoch}, example {Index} of {Count} (seed {Seed})";
}

/// <summary>
/// An endless stream of examples: each epoch visits every example once, in a permutation drawn from
/// (seed, epoch) alone, so a run restored to a saved <see cref="Position"/> continues with exactly the
/// example the original run would have seen next.
/// </summary>
public sealed class ShuffledExamples : ITrainingData
{
    private readonly TrainingExamples examples;
    private readonly long seed;
    private int[] order;
    private int epoch, index;

    /// <summary>A stream over <paramref name="examples"/> (at least one) shuffled with <paramref name="seed"/>.</summary>
    public ShuffledExamples(TrainingExamples examples, long seed)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (examples.Count == 0) throw new ArgumentException("there are no training examples to shuffle (every document was shorter than two segments?)", nameof(examples));
        this.examples = examples;
        this.seed = seed;
        order = Permutation(0);
    }

    /// <summary>Where the stream stands now (save it with a checkpoint).</summary>
    public ExamplePosition Position => new(seed, examples.Count, epoch, index);

    /// <summary>Epochs completed so far.</summary>
    public int Epoch => epoch;

    /// <summary>The next example (a new permutation starts after the last of an epoch).</summary>
    public Example Next()
    {
        if (index == order.Length)
        {
            epoch++;
            index = 0;
            order = Permutation(epoch);
        }
        return examples[order[index++]];
    }

    /// <summary>Continues from <paramref name="position"/>, saved from a stream with the same seed and examples.</summary>
    /// <exception cref="ArgumentException">The position belongs to another seed or example count, or is out of range.</exception>
    public void Restore(ExamplePosition position)
    {
        if (position.Seed != seed || position.Count != examples.Count)
            throw new ArgumentException($"position ({position}) was saved for seed {position.Seed} over {position.Count} examples; this stream has seed {seed} over {examples.Count}", nameof(position));
        if (position.Epoch < 0 || position.Index < 0 || position.Index > examples.Count)
            throw new ArgumentException($"position ({position}) is out of range: expected epoch >= 0 and 0 <= index <= {examples.Count}", nameof(position));
        epoch = position.Epoch;
        index = position.Index;
        order = Permutation(epoch);
    }

    /// <summary>The trainer's view: the next example's tokens (T*l + 1 of them).</summary>
    int[] ITrainingData.Next() => Next().Tokens.ToArray();

    /// <summary>The trainer's view of <see cref="Position"/> (epoch, index); the seed and count stay this stream's.</summary>
    TrainingDataPosition ITrainingData.Position
    {
        get => new(epoch, index);
        set
        {
            if (value.Epoch > int.MaxValue || value.Index > int.MaxValue)
                throw new ArgumentException($"data position {value} is out of range for a stream of {examples.Count} examples", nameof(value));
            Restore(new ExamplePosition(seed, examples.Count, (int)value.Epoch, (int)value.Index));
        }
    }

    private int[] Permutation(int e)
    {
        var permutation = Enumerable.Range(0, examples.Count).ToArray();
        new SeededRandom(seed, e).Shuffle(permutation.AsSpan());
        return permutation;
    }
}
