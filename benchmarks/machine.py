"""What machine a benchmark ran on, for the line under its table."""
import os
import platform


def processor():
    """'model name (family F, model M; AVX-512|AVX2)' of the first processor
    in /proc/cpuinfo: the family and model say which generation ('AMD EPYC'
    alone does not), the vector width which code fastconv compiles."""
    info = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or 'unknown processor'
    flags = info.get('flags', '').split()
    vector = ('AVX-512' if 'avx512f' in flags else
              'AVX2' if 'avx2' in flags else 'no AVX2')
    return '%s (family %s, model %s; %s)' % (
        info.get('model name', '?'), info.get('cpu family', '?'),
        info.get('model', '?'), vector)


def cpu_name():
    """processor(), then ', N cores'."""
    return '%s, %d cores' % (processor(), os.cpu_count())
