"""A real Slurm cluster of one node on this machine, for tests: Debian's
slurm-wlm and munge (installed with apt-get where they are missing), and
the three daemons started by hand, each with its own files in a
temporary folder (configuration, state, spool, logs, munge's socket), on
127.0.0.1 only. Clients find it through SLURM_CONF (`env()`); the daemons
are stopped by their process ids, after every job of the cluster has been
cancelled and has ended."""
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PACKAGES = ('slurm-wlm', 'munge')
PROGRAMS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'scontrol', 'squeue',
            'scancel', 'sinfo')
NODE = 'gcmtest'
# apt-get waits this long for another package manager to finish
APT_LOCK_WAIT = '300'

CONF = """\
ClusterName=gcmtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# bind to 127.0.0.1, not to every interface
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# no cgroups, no accounting: what a machine without systemd can run
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to scontrol for the test's checks
MinJobAge=3600
NodeName={node} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _program(name):
    return shutil.which(name) or next(
        (p for p in ('/usr/sbin/' + name, '/usr/bin/' + name)
         if os.path.exists(p)), None)


def unavailable():
    """Why a cluster cannot be made here (None: it can)."""
    if not sys.platform.startswith('linux'):
        return 'not Linux'
    if os.geteuid() != 0:
        return 'not root: installing and starting munge and Slurm needs root'
    if all(_program(p) for p in PROGRAMS):
        return None
    if not (os.path.exists('/etc/debian_version') and _program('apt-get')):
        return ('Slurm is not installed and this is not Debian, where the '
                'test would install it (%s)' % ' '.join(PACKAGES))
    return None


def install():
    """apt-get install the packages if a program is missing (updating the
    package lists once if the install fails without them)."""
    if all(_program(p) for p in PROGRAMS):
        return
    command = ['apt-get', 'install', '-y', '-q', '--no-install-recommends',
               '-o', 'DPkg::Lock::Timeout=' + APT_LOCK_WAIT] + list(PACKAGES)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(['apt-get', 'update', '-q', '-o',
                        'DPkg::Lock::Timeout=' + APT_LOCK_WAIT], env=env,
                       capture_output=True, text=True, check=True)
        done = subprocess.run(command, env=env, capture_output=True,
                              text=True)
    if done.returncode != 0 or not all(_program(p) for p in PROGRAMS):
        raise RuntimeError('apt-get install %s failed:\n%s%s' % (
            ' '.join(PACKAGES), done.stdout[-2000:], done.stderr[-2000:]))


def _free_ports(n):
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(('127.0.0.1', 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait(condition, what, timeout):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise RuntimeError('timed out after %d s waiting for %s'
                               % (timeout, what))
        time.sleep(0.2)


class Cluster:
    """with Cluster() as cluster: the daemons run inside."""

    def __init__(self):
        self.root = None
        self.daemons = []  # (name, Popen), in the order they started

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc):
        self._stop()

    def env(self, **extra):
        """The environment of a client of this cluster (and of the jobs it
        submits): SLURM_CONF, and no setting of another cluster."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('SLURM_', 'SBATCH_', 'SALLOC_',
                                    'SRUN_'))}
        env.update(SLURM_CONF=self.conf, **extra)
        return env

    def run(self, *command, check=True):
        """A client command's stdout."""
        done = subprocess.run(list(command), env=self.env(),
                              capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError('%s: exit %d: %s' % (
                ' '.join(command), done.returncode, done.stderr.strip()))
        return done.stdout

    def logs(self):
        """The daemons' logs' ends, for a failure's message."""
        text = []
        for name in ('munged.log', 'slurmctld.log', 'slurmd.log'):
            for path in (os.path.join(self.root, name),
                         os.path.join(self.root, 'munge', name)):
                if os.path.exists(path):
                    with open(path, errors='replace') as f:
                        text.append('--- %s\n%s' % (name, f.read()[-3000:]))
        return '\n'.join(text)

    def _start(self):
        munge = pwd.getpwnam('munge')
        # munged runs as munge and must reach its folder: not below
        # pytest's root-only temporary folder
        self.root = tempfile.mkdtemp(prefix='gcm-slurm-')
        os.chmod(self.root, 0o755)
        for sub in ('state', 'spool'):
            os.mkdir(os.path.join(self.root, sub))
        socket_dir = os.path.join(self.root, 'munge')
        os.mkdir(socket_dir, 0o755)
        os.chown(socket_dir, munge.pw_uid, munge.pw_gid)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf = os.path.join(self.root, 'slurm.conf')
        with open(self.conf, 'w') as f:
            f.write(CONF.format(root=self.root, ctld_port=ctld_port,
                                slurmd_port=slurmd_port, node=NODE,
                                cpus=os.cpu_count()))
        # the package's key (/etc/munge/munge.key), its own socket
        self._daemon('munged', [
            _program('munged'), '--foreground',
            '--socket=' + os.path.join(socket_dir, 'socket'),
            '--pid-file=' + os.path.join(socket_dir, 'munged.pid'),
            '--log-file=' + os.path.join(socket_dir, 'munged.log'),
            '--seed-file=' + os.path.join(socket_dir, 'munged.seed')],
            user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        _wait(lambda: os.path.exists(os.path.join(socket_dir, 'socket')),
              "munged's socket", 30)
        self._daemon('slurmctld', [_program('slurmctld'), '-D', '-f',
                                   self.conf])
        self._daemon('slurmd', [_program('slurmd'), '-D', '-f', self.conf,
                                '-N', NODE])
        _wait(lambda: self.run('sinfo', '-h', '-o', '%T',
                               check=False).strip() == 'idle',
              'the node to be idle', 60)

    def _daemon(self, name, command, **user):
        with open(os.path.join(self.root, name + '.out'), 'w') as out:
            process = subprocess.Popen(command, env=self.env(), stdout=out,
                                       stderr=subprocess.STDOUT,
                                       cwd=self.root, **user)
        self.daemons.append((name, process))
        time.sleep(0.5)
        if process.poll() is not None:
            with open(os.path.join(self.root, name + '.out')) as f:
                raise RuntimeError('%s exited with %d: %s\n%s' % (
                    name, process.returncode, f.read(), self.logs()))

    def _stop(self):
        running = dict(self.daemons)
        try:
            if running.get('slurmctld') and running.get('slurmd') and \
                    running['slurmctld'].poll() is None:
                # a job's processes are not the daemons' children: they end
                # with their jobs
                self.run('scancel', '--user=root', check=False)
                _wait(lambda: not self.run('squeue', '-h',
                                           check=False).strip(),
                      'the cancelled jobs to end', 120)
        finally:
            for name, process in reversed(self.daemons):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            if self.root:
                shutil.rmtree(self.root, ignore_errors=True)
