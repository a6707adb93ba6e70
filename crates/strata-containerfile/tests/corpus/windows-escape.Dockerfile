# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022

SHELL ["powershell", "-Command", "$ErrorActionPreference = 'Stop';"]

ARG APP_VERSION=1.0.0
ENV APP_HOME=C:\app `
    LOG_DIR=C:\logs
WORKDIR C:\app

# Files come from the build context; Windows paths keep their backslashes.
ADD https://example.com/tools/tool-${APP_VERSION}.zip C:\temp\tool.zip
COPY bin\Release\net8.0\publish\ C:\app\
COPY ["config\\app settings.json", "C:\\app\\config\\"]
COPY --chown=ContainerUser scripts\start.ps1 `
     scripts\health.ps1 `
     C:\app\scripts\
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/cert.cer C:\certs\

USER ContainerUser
ENTRYPOINT ["powershell", "-File", "C:\\app\\scripts\\start.ps1"]
