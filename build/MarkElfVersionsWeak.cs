// Marks chosen symbol-version requirements of an ELF64 shared library as weak (VER_FLG_WEAK).
//
// Why: TorchSharp 0.107's libLibTorchSharp.so was linked against GCC 13's libstdc++ and so lists
// GLIBCXX_3.4.32 among the versions it needs. Debian 12 ships GCC 12's libstdc++ (up to 3.4.30), and
// the dynamic loader refuses to load a library whose needed version is missing. The only symbol
// behind 3.4.32 is std::ios_base_library_init, which GCC 13's <iostream> references but nothing calls.
// A weak version requirement is checked by the loader but not enforced, so the library then loads.
// The build runs this over the copy in each output folder; the NuGet cache is never touched.
//
// Layout references: the System V gABI (ELF64 header and section headers) and the LSB's
// description of .gnu.version_r (Elf64_Verneed / Elf64_Vernaux).
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class MarkElfVersionsWeak : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string Versions { get; set; } = "";

    public override bool Execute()
    {
        var versions = new HashSet<string>(Versions.Split(new[] { ';', ',' }, StringSplitOptions.RemoveEmptyEntries));
        foreach (var file in Files)
        {
            var changed = ElfVersionPatcher.MarkWeak(file.ItemSpec, versions);
            if (changed.Count > 0)
                Log.LogMessage(MessageImportance.Normal, "Marked {0} weak in {1}", string.Join(", ", changed), file.ItemSpec);
        }
        return !Log.HasLoggedErrors;
    }
}

public static class ElfVersionPatcher
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>Sets VER_FLG_WEAK on every needed version in <paramref name="versions"/>.</summary>
    /// <returns>The versions that were changed (empty when already weak or not present).</returns>
    public static List<string> MarkWeak(string path, ICollection<string> versions)
    {
        var changed = new List<string>();
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException($"{path} is not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"{path} is not a little-endian ELF64 file");

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(elf, sh + 4) != ShtGnuVerneed)
                continue;
            int offset = checked((int)BitConverter.ToUInt64(elf, sh + 0x18));
            int link = (int)BitConverter.ToUInt32(elf, sh + 0x28);
            int strtab = checked((int)BitConverter.ToUInt64(elf, (int)shoff + link * shentsize + 0x18));

            int need = offset;
            while (true)
            {
                int count = BitConverter.ToUInt16(elf, need + 2);
                int aux = need + (int)BitConverter.ToUInt32(elf, need + 8);
                for (int a = 0; a < count; a++)
                {
                    string name = ReadCString(elf, strtab + (int)BitConverter.ToUInt32(elf, aux + 8));
                    ushort flags = BitConverter.ToUInt16(elf, aux + 4);
                    if (versions.Contains(name) && (flags & VerFlgWeak) == 0)
                    {
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, aux + 4);
                        changed.Add(name);
                    }
                    uint nextAux = BitConverter.ToUInt32(elf, aux + 12);
                    if (nextAux == 0) break;
                    aux += (int)nextAux;
                }
                uint next = BitConverter.ToUInt32(elf, need + 12);
                if (next == 0) break;
                need += (int)next;
            }
        }

        if (changed.Count > 0)
        {
            // Write beside, then rename: a build interrupted here never leaves a truncated library.
            string temp = path + ".patching";
            File.WriteAllBytes(temp, elf);
            File.Replace(temp, path, null); // a rename over the old file (RoslynCodeTaskFactory targets netstandard2.0)
        }
        return changed;
    }

    private static string ReadCString(byte[] data, int start)
    {
        int end = Array.IndexOf(data, (byte)0, start);
        return Encoding.ASCII.GetString(data, start, end - start);
    }
}
