using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace OrleansGpt.Training.Numerics;

/// <summary>
/// A vector of floats at one width, so that every kernel is written once (generic over <typeparamref name="TSelf"/>)
/// and compiled for the width the CPU has: <see cref="Floats512"/> (AVX-512), <see cref="Floats256"/> (AVX2 + FMA) or
/// <see cref="Floats128"/> (SSE on x86, NEON on ARM64). <see cref="Simd"/> chooses the width once.
/// </summary>
/// <remarks>
/// What System.Numerics.Tensors does with its internal ISimdVector, which .NET 10 does not make public: the members are
/// one-line forwards to Vector512/256/128, inlined, so a kernel's loop compiles to the same instructions as one written
/// against that width by hand. Only bf16 narrowing, the dropout hash's integer lanes and the sum-each transpose differ per
/// width in more than a name; each says why where it does.
/// </remarks>
internal unsafe interface IFloatVector<TSelf> where TSelf : unmanaged, IFloatVector<TSelf>
{
    /// <summary>Floats per vector.</summary>
    static abstract int Count { get; }

    /// <summary>Vector registers of this width: 32 (AVX-512, NEON) or 16 (AVX2, SSE); register-tiled kernels size their
    /// tiles by it, as more accumulators than registers spill to the stack every iteration.</summary>
    static abstract int Registers { get; }

    static abstract TSelf Zero { get; }
    static abstract TSelf Create(float value);
    static abstract TSelf Load(float* p);
    void Store(float* p);

    /// <summary><see cref="Count"/> bf16 values widened to floats (a 16-bit shift).</summary>
    static abstract TSelf LoadBf16(ushort* p);

    /// <summary>Writes the lanes rounded to the nearest bf16, ties to even (<see cref="Bf16.Round"/>'s arithmetic).</summary>
    void StoreBf16(ushort* p);

    /// <summary>2 x <see cref="Count"/> consecutive bf16 values as two vectors of floats, the even-numbered and the
    /// odd-numbered ones: one load, a shift and a mask, for kernels that can sum in that order and interleave at the end.</summary>
    static abstract void LoadBf16Pairs(ushort* p, out TSelf even, out TSelf odd);

    static abstract TSelf operator +(TSelf a, TSelf b);
    static abstract TSelf operator -(TSelf a, TSelf b);
    static abstract TSelf operator *(TSelf a, TSelf b);
    static abstract TSelf operator /(TSelf a, TSelf b);

    /// <summary>a x b + c, fused where the CPU has FMA (every AVX2 and NEON CPU), else multiplied and added.</summary>
    static abstract TSelf MultiplyAdd(TSelf a, TSelf b, TSelf c);

    /// <summary>IEEE maximum: a NaN lane gives NaN.</summary>
    static abstract TSelf Max(TSelf a, TSelf b);

    /// <summary>The instruction's maximum (x86's maxps: b where either is NaN).</summary>
    static abstract TSelf MaxNative(TSelf a, TSelf b);

    /// <summary>The instruction's minimum (x86's minps: b where either is NaN).</summary>
    static abstract TSelf MinNative(TSelf a, TSelf b);

    static abstract TSelf Sqrt(TSelf a);

    /// <summary>Rounded to the nearest integer, ties to even.</summary>
    static abstract TSelf Round(TSelf a);

    /// <summary>2^n for lanes holding whole numbers n in [-126, 127], built in the exponent bits.</summary>
    static abstract TSelf PowerOfTwo(TSelf n);

    /// <summary>All-ones lanes where a &lt; b.</summary>
    static abstract TSelf LessThan(TSelf a, TSelf b);

    /// <summary>Lanes of <paramref name="whenTrue"/> where <paramref name="mask"/> is all ones, else of <paramref name="whenFalse"/>.</summary>
    static abstract TSelf Select(TSelf mask, TSelf whenTrue, TSelf whenFalse);

    /// <summary>All-ones lanes i where first + i &gt; limit (a causal mask's keys after a row).</summary>
    static abstract TSelf IndexAbove(int first, int limit);

    /// <summary>All-ones lanes i where the dropout hash of (first + i, seed) is at least threshold (<see cref="DropoutMask"/>).</summary>
    static abstract TSelf HashAtLeast(uint first, uint seed, uint threshold);

    /// <summary>The sum of the lanes.</summary>
    static abstract float Sum(TSelf v);

    /// <summary>The largest lane (MathF.Max's: a NaN lane gives NaN).</summary>
    static abstract float MaxAcross(TSelf v);

    static abstract float Element(TSelf v, int i);

    /// <summary>Lane i is the sum of vector i's lanes, for i below <see cref="Count"/> (the later arguments are ignored):
    /// <see cref="Count"/> dot products finished at once, a transpose as it adds, a third of the shuffles of summing each alone.</summary>
    static abstract TSelf SumEach(TSelf s0, TSelf s1, TSelf s2, TSelf s3, TSelf s4, TSelf s5, TSelf s6, TSelf s7,
        TSelf s8, TSelf s9, TSelf s10, TSelf s11, TSelf s12, TSelf s13, TSelf s14, TSelf s15);
}

/// <summary>The vector width the kernels run at on this CPU, chosen once, and the name benchmarks and logs print.</summary>
public static class Simd
{
    /// <summary>Bits per vector: 512, 256 or 128 (the widest the runtime accelerates; DOTNET_EnableAVX512=0 or
    /// DOTNET_EnableAVX2=0 narrow it for a process).</summary>
    public static int Width { get; } =
        Vector512.IsHardwareAccelerated ? 512 : Vector256.IsHardwareAccelerated ? 256 : Vector128.IsHardwareAccelerated ? 128 : 0;

    /// <summary>Whether the own kernels can run at all: every x86-64 and ARM64 CPU .NET runs on accelerates 128 bits.</summary>
    public static bool IsSupported => Width != 0;

    /// <summary>The path in effect, as benchmarks and the silo's log print it: "AVX-512", "AVX2+FMA", "SSE4.1" or "NEON".</summary>
    public static string Path => Width switch
    {
        512 => "AVX-512",
        256 => Fma.IsSupported ? "AVX2+FMA" : "AVX2",
        128 => AdvSimd.IsSupported ? "NEON" : Sse41.IsSupported ? "SSE4.1" : "SSE2",
        _ => "none (scalar only; the own kernels are off)",
    };

    /// <summary>Asks for the cache line at <paramref name="address"/> (x86's prefetcht0; nothing elsewhere).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe void Prefetch(void* address)
    {
        if (Sse.IsSupported) Sse.Prefetch0(address);
    }
}

/// <summary>16 floats (AVX-512).</summary>
internal readonly unsafe struct Floats512(Vector512<float> v) : IFloatVector<Floats512>
{
    public readonly Vector512<float> V = v;

    public static int Count => 16;
    public static int Registers => 32;
    public static Floats512 Zero => default;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Create(float value) => new(Vector512.Create(value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Load(float* p) => new(Vector512.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Store(float* p) => V.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats512 LoadBf16(ushort* p) => new((Vector512.WidenLower(Vector256.Load(p).ToVector512Unsafe()) << 16).AsSingle());

    // vpmovdw narrows 16 lanes in one instruction; the generic Narrow takes two vectors.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreBf16(ushort* p)
    {
        var bits = V.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) >> 16;
        (Avx512F.IsSupported ? Avx512F.ConvertToVector256UInt16(rounded) : Vector256.Narrow(rounded.GetLower(), rounded.GetUpper())).Store(p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16Pairs(ushort* p, out Floats512 even, out Floats512 odd)
    {
        var v = Vector512.Load((uint*)p);
        even = new((v << 16).AsSingle());
        odd = new((v & Vector512.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 operator +(Floats512 a, Floats512 b) => new(a.V + b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 operator -(Floats512 a, Floats512 b) => new(a.V - b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 operator *(Floats512 a, Floats512 b) => new(a.V * b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 operator /(Floats512 a, Floats512 b) => new(a.V / b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 MultiplyAdd(Floats512 a, Floats512 b, Floats512 c) => new(Vector512.MultiplyAddEstimate(a.V, b.V, c.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Max(Floats512 a, Floats512 b) => new(Vector512.Max(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 MaxNative(Floats512 a, Floats512 b) => new(Vector512.MaxNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 MinNative(Floats512 a, Floats512 b) => new(Vector512.MinNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Sqrt(Floats512 a) => new(Vector512.Sqrt(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Round(Floats512 a) => new(Vector512.Round(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats512 PowerOfTwo(Floats512 n) => new(((Vector512.ConvertToInt32(n.V) + Vector512.Create(127)) << 23).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 LessThan(Floats512 a, Floats512 b) => new(Vector512.LessThan(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats512 Select(Floats512 mask, Floats512 t, Floats512 f) => new(Vector512.ConditionalSelect(mask.V, t.V, f.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats512 IndexAbove(int first, int limit) =>
        new(Vector512.GreaterThan(Vector512.Create(first) + Vector512<int>.Indices, Vector512.Create(limit)).AsSingle());

    // The hash works on 32-bit integer lanes, a type of its own per width.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats512 HashAtLeast(uint first, uint seed, uint threshold)
    {
        var x = Vector512.Create(first) + Vector512<uint>.Indices;
        x ^= x >> 16; x *= Vector512.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector512.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        x ^= Vector512.Create(seed);
        x ^= x >> 16; x *= Vector512.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector512.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        return new(Vector512.GreaterThanOrEqual(x, Vector512.Create(threshold)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Floats512 v) => Vector512.Sum(v.V);
    public static float MaxAcross(Floats512 v) => MathF.Max(Floats256.MaxAcross(new(v.V.GetLower())), Floats256.MaxAcross(new(v.V.GetUpper())));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Element(Floats512 v, int i) => v.V.GetElement(i);

    // Per 128-bit lane pairs, then quads of vectors, then across the four lanes: 45 shuffles and adds for 16 sums.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats512 SumEach(Floats512 s0, Floats512 s1, Floats512 s2, Floats512 s3, Floats512 s4, Floats512 s5, Floats512 s6, Floats512 s7,
        Floats512 s8, Floats512 s9, Floats512 s10, Floats512 s11, Floats512 s12, Floats512 s13, Floats512 s14, Floats512 s15)
    {
        if (!Avx512F.IsSupported)
        {
            var each = stackalloc float[16];
            each[0] = Sum(s0); each[1] = Sum(s1); each[2] = Sum(s2); each[3] = Sum(s3); each[4] = Sum(s4); each[5] = Sum(s5); each[6] = Sum(s6); each[7] = Sum(s7);
            each[8] = Sum(s8); each[9] = Sum(s9); each[10] = Sum(s10); each[11] = Sum(s11); each[12] = Sum(s12); each[13] = Sum(s13); each[14] = Sum(s14); each[15] = Sum(s15);
            return Load(each);
        }
        var a = Quad(Pair(s0.V, s1.V), Pair(s2.V, s3.V));
        var b = Quad(Pair(s4.V, s5.V), Pair(s6.V, s7.V));
        var c = Quad(Pair(s8.V, s9.V), Pair(s10.V, s11.V));
        var d = Quad(Pair(s12.V, s13.V), Pair(s14.V, s15.V));
        return new(Lanes(Lanes(a, b), Lanes(c, d)));

        // Per 128-bit lane, [x0 + x2, y0 + y2, x1 + x3, y1 + y3].
        static Vector512<float> Pair(Vector512<float> x, Vector512<float> y) => Avx512F.UnpackLow(x, y) + Avx512F.UnpackHigh(x, y);
        // Per 128-bit lane, from two Pairs of (x, y) and (z, w): [sum x, sum y, sum z, sum w].
        static Vector512<float> Quad(Vector512<float> xy, Vector512<float> zw) =>
            Avx512F.UnpackLow(xy.AsDouble(), zw.AsDouble()).AsSingle() + Avx512F.UnpackHigh(xy.AsDouble(), zw.AsDouble()).AsSingle();
        // [x.L0 + x.L1, x.L2 + x.L3, y.L0 + y.L1, y.L2 + y.L3] over 128-bit lanes L.
        static Vector512<float> Lanes(Vector512<float> x, Vector512<float> y) =>
            Avx512F.Shuffle4x128(x, y, 0b10_00_10_00) + Avx512F.Shuffle4x128(x, y, 0b11_01_11_01);
    }
}

/// <summary>8 floats (AVX2 + FMA).</summary>
internal readonly unsafe struct Floats256(Vector256<float> v) : IFloatVector<Floats256>
{
    public readonly Vector256<float> V = v;

    public static int Count => 8;
    public static int Registers => 16;
    public static Floats256 Zero => default;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Create(float value) => new(Vector256.Create(value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Load(float* p) => new(Vector256.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Store(float* p) => V.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats256 LoadBf16(ushort* p) => new((Vector256.WidenLower(Vector128.Load(p).ToVector256Unsafe()) << 16).AsSingle());

    // No one-vector narrowing below AVX-512: the two 128-bit halves packed together.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreBf16(ushort* p)
    {
        var bits = V.AsUInt32();
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) >> 16;
        Vector128.Narrow(rounded.GetLower(), rounded.GetUpper()).Store(p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16Pairs(ushort* p, out Floats256 even, out Floats256 odd)
    {
        var v = Vector256.Load((uint*)p);
        even = new((v << 16).AsSingle());
        odd = new((v & Vector256.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 operator +(Floats256 a, Floats256 b) => new(a.V + b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 operator -(Floats256 a, Floats256 b) => new(a.V - b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 operator *(Floats256 a, Floats256 b) => new(a.V * b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 operator /(Floats256 a, Floats256 b) => new(a.V / b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 MultiplyAdd(Floats256 a, Floats256 b, Floats256 c) => new(Vector256.MultiplyAddEstimate(a.V, b.V, c.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Max(Floats256 a, Floats256 b) => new(Vector256.Max(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 MaxNative(Floats256 a, Floats256 b) => new(Vector256.MaxNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 MinNative(Floats256 a, Floats256 b) => new(Vector256.MinNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Sqrt(Floats256 a) => new(Vector256.Sqrt(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Round(Floats256 a) => new(Vector256.Round(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats256 PowerOfTwo(Floats256 n) => new(((Vector256.ConvertToInt32(n.V) + Vector256.Create(127)) << 23).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 LessThan(Floats256 a, Floats256 b) => new(Vector256.LessThan(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats256 Select(Floats256 mask, Floats256 t, Floats256 f) => new(Vector256.ConditionalSelect(mask.V, t.V, f.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats256 IndexAbove(int first, int limit) =>
        new(Vector256.GreaterThan(Vector256.Create(first) + Vector256<int>.Indices, Vector256.Create(limit)).AsSingle());

    // The hash works on 32-bit integer lanes, a type of its own per width.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats256 HashAtLeast(uint first, uint seed, uint threshold)
    {
        var x = Vector256.Create(first) + Vector256<uint>.Indices;
        x ^= x >> 16; x *= Vector256.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector256.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        x ^= Vector256.Create(seed);
        x ^= x >> 16; x *= Vector256.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector256.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        return new(Vector256.GreaterThanOrEqual(x, Vector256.Create(threshold)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Floats256 v) => Vector256.Sum(v.V);
    public static float MaxAcross(Floats256 v) => MathF.Max(Floats128.MaxAcross(new(v.V.GetLower())), Floats128.MaxAcross(new(v.V.GetUpper())));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Element(Floats256 v, int i) => v.V.GetElement(i);

    // vhaddps twice per 128-bit lane, then the lanes' halves added: 8 sums in 9 instructions.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats256 SumEach(Floats256 s0, Floats256 s1, Floats256 s2, Floats256 s3, Floats256 s4, Floats256 s5, Floats256 s6, Floats256 s7,
        Floats256 s8, Floats256 s9, Floats256 s10, Floats256 s11, Floats256 s12, Floats256 s13, Floats256 s14, Floats256 s15)
    {
        if (!Avx.IsSupported)
        {
            var each = stackalloc float[8];
            each[0] = Sum(s0); each[1] = Sum(s1); each[2] = Sum(s2); each[3] = Sum(s3); each[4] = Sum(s4); each[5] = Sum(s5); each[6] = Sum(s6); each[7] = Sum(s7);
            return Load(each);
        }
        var low = Avx.HorizontalAdd(Avx.HorizontalAdd(s0.V, s1.V), Avx.HorizontalAdd(s2.V, s3.V));  // per lane: keys 0-3
        var high = Avx.HorizontalAdd(Avx.HorizontalAdd(s4.V, s5.V), Avx.HorizontalAdd(s6.V, s7.V)); // per lane: keys 4-7
        return new(Avx.Permute2x128(low, high, 0x20) + Avx.Permute2x128(low, high, 0x31));
    }
}

/// <summary>4 floats (SSE on x86, NEON on ARM64).</summary>
internal readonly unsafe struct Floats128(Vector128<float> v) : IFloatVector<Floats128>
{
    public readonly Vector128<float> V = v;

    public static int Count => 4;
    public static int Registers => AdvSimd.IsSupported ? 32 : 16;
    public static Floats128 Zero => default;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Create(float value) => new(Vector128.Create(value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Load(float* p) => new(Vector128.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Store(float* p) => V.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats128 LoadBf16(ushort* p) => new((Vector128.WidenLower(Vector128.CreateScalarUnsafe(*(ulong*)p).AsUInt16()) << 16).AsSingle());

    // Four bf16 values are 64 bits: narrowed into the low half of a vector and stored as one long.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void StoreBf16(ushort* p)
    {
        var bits = V.AsUInt32();
        var rounded = (bits + Vector128.Create(0x7FFFu) + ((bits >> 16) & Vector128<uint>.One)) >> 16;
        *(ulong*)p = Vector128.Narrow(rounded, rounded).AsUInt64().ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16Pairs(ushort* p, out Floats128 even, out Floats128 odd)
    {
        var v = Vector128.Load((uint*)p);
        even = new((v << 16).AsSingle());
        odd = new((v & Vector128.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 operator +(Floats128 a, Floats128 b) => new(a.V + b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 operator -(Floats128 a, Floats128 b) => new(a.V - b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 operator *(Floats128 a, Floats128 b) => new(a.V * b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 operator /(Floats128 a, Floats128 b) => new(a.V / b.V);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 MultiplyAdd(Floats128 a, Floats128 b, Floats128 c) => new(Vector128.MultiplyAddEstimate(a.V, b.V, c.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Max(Floats128 a, Floats128 b) => new(Vector128.Max(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 MaxNative(Floats128 a, Floats128 b) => new(Vector128.MaxNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 MinNative(Floats128 a, Floats128 b) => new(Vector128.MinNative(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Sqrt(Floats128 a) => new(Vector128.Sqrt(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Round(Floats128 a) => new(Vector128.Round(a.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats128 PowerOfTwo(Floats128 n) => new(((Vector128.ConvertToInt32(n.V) + Vector128.Create(127)) << 23).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 LessThan(Floats128 a, Floats128 b) => new(Vector128.LessThan(a.V, b.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Floats128 Select(Floats128 mask, Floats128 t, Floats128 f) => new(Vector128.ConditionalSelect(mask.V, t.V, f.V));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats128 IndexAbove(int first, int limit) =>
        new(Vector128.GreaterThan(Vector128.Create(first) + Vector128<int>.Indices, Vector128.Create(limit)).AsSingle());

    // The hash works on 32-bit integer lanes, a type of its own per width.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats128 HashAtLeast(uint first, uint seed, uint threshold)
    {
        var x = Vector128.Create(first) + Vector128<uint>.Indices;
        x ^= x >> 16; x *= Vector128.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector128.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        x ^= Vector128.Create(seed);
        x ^= x >> 16; x *= Vector128.Create(DropoutMask.Multiplier1); x ^= x >> 15; x *= Vector128.Create(DropoutMask.Multiplier2); x ^= x >> 16;
        return new(Vector128.GreaterThanOrEqual(x, Vector128.Create(threshold)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Floats128 v) => Vector128.Sum(v.V);
    public static float MaxAcross(Floats128 v) => MathF.Max(MathF.Max(v.V.GetElement(0), v.V.GetElement(1)), MathF.Max(v.V.GetElement(2), v.V.GetElement(3)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Element(Floats128 v, int i) => v.V.GetElement(i);

    // Pairwise adds twice (SSE3's haddps, NEON's faddp): 4 sums in 3 instructions.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Floats128 SumEach(Floats128 s0, Floats128 s1, Floats128 s2, Floats128 s3, Floats128 s4, Floats128 s5, Floats128 s6, Floats128 s7,
        Floats128 s8, Floats128 s9, Floats128 s10, Floats128 s11, Floats128 s12, Floats128 s13, Floats128 s14, Floats128 s15)
    {
        if (Sse3.IsSupported)
            return new(Sse3.HorizontalAdd(Sse3.HorizontalAdd(s0.V, s1.V), Sse3.HorizontalAdd(s2.V, s3.V)));
        if (AdvSimd.Arm64.IsSupported)
            return new(AdvSimd.Arm64.AddPairwise(AdvSimd.Arm64.AddPairwise(s0.V, s1.V), AdvSimd.Arm64.AddPairwise(s2.V, s3.V)));
        return new(Vector128.Create(Sum(s0), Sum(s1), Sum(s2), Sum(s3)));
    }
}
